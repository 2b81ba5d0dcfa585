"""attach's pure parts: roles, the registry on disk, which servers --name picks, what the
errors say, and the server-load figures from Prometheus text. No vLLM, no Ray."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ray_tpu_profile.analysis.server_load import RUNNING, MetricsSample, describe, load_context, parse_metrics
from ray_tpu_profile.attach import registry
from ray_tpu_profile.attach.command import chosen_servers, listing
from ray_tpu_profile.attach.registry import RegistryEntry, role_of
from ray_tpu_profile.config import AttachConfig
from ray_tpu_profile.errors import ConfigError


def entry(
    pid: int = os.getpid(),
    name: str | None = "prod",
    role: str = "engine-core",
    rank: int | None = None,
    started_ticks: int | None = None,
) -> RegistryEntry:
    return RegistryEntry(
        hostname="h",
        node_id=None,
        pid=pid,
        started_ticks=started_ticks,
        socket="/tmp/ray-tpu-profile-capture-abc123/capture.sock",
        profiler="jax",
        role=role,
        rank=rank,
        name=name,
        registered_at_s=0.0,
    )


def test_roles_of_vllm_processes():
    assert role_of("EngineCore", None) == ("engine-core", None)
    assert role_of("EngineCore_DP1", None) == ("engine-core", None)
    assert role_of("VllmWorker-3", 3) == ("worker", 3)
    assert role_of("MainProcess", None) == ("frontend", None)
    assert entry(role="worker", rank=2).label == f"worker2-pid{os.getpid()}"


def test_an_entry_round_trips_through_json():
    e = entry(rank=None)
    assert RegistryEntry.from_json(e.to_json()) == e


def test_registry_keeps_live_processes_and_prunes_gone_or_reused_ones_of_this_host_only(tmp_path):
    here = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = registry.process_started_ticks(os.getpid())
    assert me is not None

    def on(host, **kw):
        return RegistryEntry(**{**entry(**kw).to_json(), "hostname": host})

    registry.write_file_entry(on(here, started_ticks=me), tmp_path)
    registry.write_file_entry(on(here, pid=gone.pid, started_ticks=me), tmp_path)
    reused = on(f"{here}-x", started_ticks=me + 1)  # same pid, other start: another process
    (tmp_path / f"{here}-reused.json").write_text(json.dumps({**reused.to_json(), "hostname": here}))
    # Another host's entry in a home shared over NFS: its pid means nothing here, and it is
    # that host's to prune, not this one's.
    registry.write_file_entry(on("other-host", pid=gone.pid, started_ticks=me), tmp_path)
    live = registry.live_file_entries(tmp_path)
    assert [(e.hostname, e.pid) for e in live] == [(here, os.getpid())]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(
        [f"{here}-{os.getpid()}.json", f"other-host-{gone.pid}.json"]
    )
    assert stat.S_IMODE(os.stat(tmp_path / f"{here}-{os.getpid()}.json").st_mode) == 0o600


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"pid": 1}, "pid 1"),
        ({"pid": "12"}, "pid '12'"),
        ({"socket": 4321}, "socket 4321"),
        ({"socket": "relative/ray-tpu-profile-capture-x/capture.sock"}, "socket 'relative/"),
        ({"socket": "/tmp/../etc/ray-tpu-profile-capture-x/capture.sock"}, "socket '/tmp/../etc/"),
        ({"socket": "/tmp/ray-tpu-profile-capture-x/other.sock"}, "socket '/tmp/ray-tpu-profile-capture-x/other"),
        ({"role": "../../etc"}, "role '../../etc'"),
        ({"role": "worker", "rank": None}, "rank None of a worker"),
        ({"name": "../x"}, "name '../x'"),
        ({"hostname": ""}, "hostname ''"),
        ({"profiler": "torch"}, "profiler 'torch'"),
        ({"registered_at_s": float("nan")}, "registered_at_s nan"),
    ],
)
def test_a_bad_registry_entry_is_refused_by_name(change, problem):
    with pytest.raises(registry.EntryError, match=re.escape(problem)):
        RegistryEntry.from_json({**entry().to_json(), **change})


def test_one_bad_entry_is_skipped_and_said_not_fatal_to_everyone(tmp_path):
    me = registry.process_started_ticks(os.getpid())
    here = socket.gethostname()
    registry.write_file_entry(RegistryEntry(**{**entry(started_ticks=me).to_json(), "hostname": here}), tmp_path)
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "evil.json").write_text(json.dumps({**entry().to_json(), "role": "../x"}))
    problems = []
    assert [e.pid for e in registry.live_file_entries(tmp_path, problems)] == [os.getpid()]
    assert len(problems) == 2 and any("role '../x'" in p for p in problems)


def test_a_registry_directory_others_can_use_is_not_trusted(tmp_path):
    shared = tmp_path / "attach"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(registry.UnsafeRegistry, match="open to other users"):
        registry.live_file_entries(shared)
    with pytest.raises(registry.UnsafeRegistry):
        registry.write_file_entry(entry(started_ticks=1), shared)
    fresh = registry.private_dir(tmp_path / "new" / "attach")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_the_registry_directory_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert registry.registry_dir() == tmp_path / "ray-tpu-profile" / "attach"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert registry.registry_dir() == Path.home() / ".cache" / "ray-tpu-profile" / "attach"


def config(**kw) -> AttachConfig:
    return AttachConfig(
        **{"address": None, "name": None, "duration_ms": 1000, "delay_ms": 0, "profile_result_dir": Path("out"), **kw}
    )


def test_name_picks_its_deployment_and_listing_names_every_server():
    found = {"host0": [entry(name="prod"), entry(pid=2, name="canary")], "host1": [entry(pid=3, name="canary")]}
    assert {h: [e.pid for e in es] for h, es in chosen_servers(found, config(name="canary")).items()} == {
        "host0": [2],
        "host1": [3],
    }
    assert len(chosen_servers(found, config())["host0"]) == 2
    assert [s["trace_name"] for s in listing(found, "canary")] == ["host0.engine-core-pid2", "host1.engine-core-pid3"]


def test_nothing_registered_or_a_name_matching_nothing_says_so():
    with pytest.raises(
        ConfigError, match="no vLLM process is registered for attach on this host.*RAY_TPU_PROFILE_ATTACH=1"
    ):
        chosen_servers({"host0": []}, config())
    with pytest.raises(ConfigError, match="--name.*nope.*matches no registered process.*canary, prod"):
        chosen_servers({"host0": [entry(name="prod"), entry(pid=2, name="canary")]}, config(name="nope"))


@pytest.mark.parametrize(
    "kw, flag",
    [
        ({"duration_ms": 0}, "--duration-ms"),
        ({"delay_ms": -1}, "--delay-ms"),
        ({"profile_result_dir": None}, "--profile-result-dir"),
        ({"server_url": "localhost:8000"}, "--server-url"),
        ({"timeout_s": -1.0}, "--timeout-s"),
        ({"timeout_s": float("nan")}, "--timeout-s"),
        ({"max_clock_uncertainty_ms": float("inf")}, "--max-clock-uncertainty-ms"),
        ({"python_tracer_level": 2}, "--python-tracer-level"),
        # issue 25: bounds on a live server, and no silent local ./gs:/ directory
        ({"duration_ms": 30_001}, "--duration-ms"),
        ({"delay_ms": 3_600_001}, "--delay-ms"),
        ({"profile_result_dir": Path("gs://bucket/x")}, "--profile-result-dir"),
    ],
)
def test_bad_flags_name_the_flag(kw, flag):
    with pytest.raises(ConfigError) as e:
        config(**kw).validate(list_only=False)
    assert e.value.flag == flag


def test_server_load_around_the_window_from_metrics_text():
    def text(running, waiting, prompt, generation):
        return (
            f'# HELP vllm:num_requests_running x\nvllm:num_requests_running{{engine="0",model_name="m"}} {running}\n'
            f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {waiting}\n'
            f'vllm:prompt_tokens_total{{engine="0",model_name="m"}} {prompt}\n'
            f'vllm:generation_tokens_total{{engine="0",model_name="m"}} {generation}\n'
            f'vllm:generation_tokens_created{{engine="0"}} 1.7e9\n'
        )

    assert parse_metrics(text(2, 1, 10.0, 5.0)) == {
        "vllm:num_requests_running": 2,
        "vllm:num_requests_waiting": 1,
        "vllm:prompt_tokens_total": 10.0,
        "vllm:generation_tokens_total": 5.0,
    }
    samples = [
        MetricsSample(t, parse_metrics(text(*v)))
        for t, v in ((0.0, (1, 0, 0, 0)), (1.0, (2, 1, 160, 80)), (3.0, (2, 0, 480, 240)), (4.0, (0, 0, 480, 250)))
    ]
    context = load_context(samples)
    assert context["intervals"]["before"]["prompt_tokens_per_s"] == 160
    assert context["intervals"]["during"]["generation_tokens_per_s"] == 80
    assert context["intervals"]["after"]["generation_tokens_per_s"] == 10
    assert context["requests"]["window_start"] == {"running": 2, "waiting": 1}
    assert "2.0 running, 1.0 waiting" in describe(context)


def test_the_plugin_does_nothing_without_its_variable(monkeypatch):
    from ray_tpu_profile.attach import plugin

    monkeypatch.delenv("RAY_TPU_PROFILE_ATTACH", raising=False)
    plugin.register()
    assert plugin._listener is None


def test_a_long_capture_on_a_live_server_is_asked_for_by_name():
    with pytest.raises(ConfigError, match="--allow-long-capture"):
        config(duration_ms=60_000).validate(list_only=False)
    config(duration_ms=60_000, allow_long_capture=True).validate(list_only=False)


def test_metrics_keep_only_finite_samples_so_the_manifest_stays_json():
    """Issue 25: a NaN sample made manifest.json invalid JSON."""
    values = parse_metrics(
        "vllm:num_requests_running 2\n"
        'vllm:num_requests_running{engine="1"} NaN\n'
        "vllm:prompt_tokens_total +Inf\n"
        "vllm:generation_tokens_total not-a-number\n"
        "vllm:num_requests_waiting 1e400\n"
    )
    assert values == {RUNNING: 2.0}
    samples = [MetricsSample(float(t), values) for t in range(4)]
    json.dumps(load_context(samples), allow_nan=False)  # raises on NaN or Inf


def test_a_metrics_page_is_read_only_so_far():
    """Issue 25: /metrics was read whole, however much a server (or whatever listens at the
    URL) sent. A server on loopback here sends more than the bound."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from ray_tpu_profile.analysis import server_load

    class Endless(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            chunk = b"vllm:num_requests_running 1\n" * 40_000
            try:
                for _ in range(server_load.MAX_METRICS_BYTES // len(chunk) + 2):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading at its bound: what is tested

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ValueError, match="larger than 16 MiB"):
            server_load.fetch(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=30)
    finally:
        server.shutdown()
        server.server_close()


def test_a_stop_before_the_run_directory_is_one_line_exit_5_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """SIGTERM (`ray job stop`) while attach looks for servers, delivered for real to this
    process at that point (its handler raises at once): no traceback, nothing written."""
    import signal

    from ray_tpu_profile import cli
    from ray_tpu_profile.attach import command
    from ray_tpu_profile.errors import EXIT_STOPPED

    def stopped_while_finding(session, timeout_s):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the stop handler did not raise")

    monkeypatch.setattr(command, "find_servers", stopped_while_finding)
    monkeypatch.setattr(sys, "argv", ["ray-tpu-profile", "attach", "--profile-result-dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == EXIT_STOPPED
    assert capsys.readouterr().err.splitlines() == ["ray-tpu-profile: stopped by SIGTERM"]
    assert not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back
