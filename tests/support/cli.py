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


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def run_cli(*args: str, env: dict | None = None, timeout_s: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    if "RAY_ADDRESS" not in (env or {}):
        full_env.pop("RAY_ADDRESS", None)  # the local-cluster default must not find one
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, timeout=timeout_s, cwd=REPO)


def load_manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def wait_for_stage(root: Path, stage: str, deadline_s: float = 240) -> dict:
    """Poll a run's staging manifest (rewritten at every stage) until the run reaches stage."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for path in root.glob(".*.partial/manifest.json"):
            try:
                manifest = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # renamed or being replaced right now
            if manifest["stage"] == stage:
                return manifest
        time.sleep(0.05)
    raise AssertionError(f"run never reached {stage}")
