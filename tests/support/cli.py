"""Running the CLI the way a user runs it, and reading what it leaves behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "ray_tpu_profile"]
LOOPBACK = "127.0.0.1"
# The smallest workload of the tiny model: every host runs it in seconds.
TINY_WORKLOAD = ["--input-len", "16", "--output-len", "16", "--batch-size", "4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def cli_env(env: dict | None = None) -> dict[str, str]:
    """This process's environment plus env, without RAY_ADDRESS unless env sets it."""
    full_env = {**os.environ, **(env or {})}
    if "RAY_ADDRESS" not in (env or {}):
        full_env.pop("RAY_ADDRESS", None)  # the local-cluster default must not find one
    return full_env


def run_cli(*args: str, env: dict | None = None, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """Run the CLI to the end, as a user runs it from the repository."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=cli_env(env), timeout=timeout_s, cwd=REPO)


def start_cli(*args: str) -> subprocess.Popen:
    """Start the CLI as a user runs it from the repository, its output piped as text."""
    return subprocess.Popen(
        [*CLI, *args], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run_ok(address: str | None, out: Path, *flags: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`run` on the cluster at address (None: the local default) into out: it must exit 0 and
    leave exactly one run directory there, which is returned with the process."""
    where = ["--address", address] if address is not None else []
    proc = run_cli("run", *where, "--profile-result-dir", str(out), *flags)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run_dir,) = list(out.iterdir())
    return proc, run_dir


def load_manifest(run_dir: Path) -> dict:
    return validated("manifest", json.loads((run_dir / "manifest.json").read_text()))


def wait_for_stage(root: Path, stage: str, deadline_s: float = 240, proc: subprocess.Popen | None = None) -> dict:
    """Poll a run's staging manifest (rewritten at every stage) until the run reaches stage;
    if proc (the run) exits first, fail at once with what it said."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            _, stderr = proc.communicate()
            raise AssertionError(f"the run exited with {proc.returncode} before {stage}: {stderr[-3000:]}")
        for path in root.glob(".*.partial/manifest.json"):
            try:
                manifest = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # renamed or being replaced right now
            if manifest["stage"] == stage:
                return manifest
        time.sleep(0.05)
    reached = [json.loads(p.read_text())["stage"] for p in root.glob(".*.partial/manifest.json")]
    raise AssertionError(f"run never reached {stage} in {deadline_s} s (stage now: {reached or 'no manifest'})")


def validated(kind: str, data: dict) -> dict:
    """data, checked against the published JSON Schema of `kind` ("manifest" or "report"):
    every manifest and report the tests read from a run directory goes through here."""
    import jsonschema

    schema_path = REPO / "ray_tpu_profile" / "rundir" / "schemas" / f"{kind}.schema.json"
    jsonschema.Draft202012Validator(json.loads(schema_path.read_text())).validate(data)
    return data


def load_report(run_dir: Path) -> dict:
    return validated("report", json.loads((run_dir / "report.json").read_text()))
