"""Run directory layout, safe paths, checksums and the manifest (pure)."""

import hashlib
import json

import pytest

from ray_tpu_profile.core.files import sha256_file
from ray_tpu_profile.core.hosts import Host
from ray_tpu_profile.core.records import HostRecord, HostStatus, PhaseTiming, RunStatus, ShapeRecord, run_status
from ray_tpu_profile.rundir.layout import (
    build_latency,
    build_manifest,
    host_file_dest,
    new_run_id,
    safe_relpath,
    staging_dir,
    write_json_atomic,
)


def record(name, status):
    r = HostRecord(host=Host(name=name, node_id=f"id-{name}", node_ip="127.0.0.1", chips=4))
    r.status = HostStatus(status)
    r.load = PhaseTiming(10.0, 12.5)
    r.shapes["4x8x8"] = ShapeRecord(
        warmup=PhaseTiming(12.6, 13.6, (0.5, 0.5)), profiled=PhaseTiming(13.7, 14.2, (0.5,))
    )
    return r


def test_run_ids_are_unique_and_sortable(tmp_path):
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50
    assert staging_dir(tmp_path, "x").name == ".x.partial"


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "a//b", "", "a\\b", "a/./../b", ".."])
def test_unsafe_paths_refused(bad):
    with pytest.raises(ValueError, match="unsafe path"):
        safe_relpath(bad)


def test_host_file_dest():
    assert host_file_dest("h0", "torch/a.json.gz").as_posix() == "hosts/h0/torch/a.json.gz"
    with pytest.raises(ValueError):
        host_file_dest("../h0", "a")


def test_sha256_file(tmp_path):
    f = tmp_path / "f"
    data = b"x" * (9 << 20)  # spans more than one read chunk
    f.write_bytes(data)
    assert sha256_file(f) == hashlib.sha256(data).hexdigest()


def test_run_status():
    assert run_status(["ok", "ok"], stopped=False) is RunStatus.OK == "ok"
    assert run_status([HostStatus.OK, HostStatus.FAILED], stopped=False) is RunStatus.PARTIAL
    assert run_status(["failed"], stopped=False) is RunStatus.FAILED
    assert run_status(["ok"], stopped=True) is RunStatus.STOPPED
    assert run_status([], stopped=False) is RunStatus.FAILED


def test_manifest_contract(tmp_path):
    a, b = record("a", "ok"), record("b", "failed")
    b.error = "actor process died"
    a.files = [{"path": "hosts/a/torch/t.json.gz", "bytes": 3, "sha256": "00"}]
    m = build_manifest(
        run_id="r1",
        status="partial",
        stage="done",
        error=None,
        command=["ray-tpu-profile", "run"],
        versions={"vllm": "0.32.0"},
        workload={"shape": "1x2x3"},
        capture={"profiler": "torch"},
        cluster={},
        engine={},
        records=[a, b],
    )
    for key in ("run_id", "status", "command", "versions", "workload", "capture", "hosts"):
        assert key in m
    ha, hb = m["hosts"]
    assert set(ha) >= {"name", "node_id", "status", "error", "files", "latency_s"}
    assert ha["latency_s"] == {"load": 2.5, "warmup": [0.5, 0.5], "warmup_in_capture": 0, "profiled": [0.5]}
    assert hb["status"] == "failed" and hb["error"] == "actor process died"
    path = tmp_path / "manifest.json"
    write_json_atomic(path, m)
    assert json.loads(path.read_text()) == m
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    a.shapes["1x2x3"] = ShapeRecord(warmup=a.warmup, profiled=a.profiled)
    lat = build_latency(["1x2x3"], [a, b])
    assert lat["shapes"]["1x2x3"]["a"] == {"warmup": [0.5, 0.5], "profiled": [0.5]}


def test_xplanes_go_to_one_session_for_all_hosts():
    assert (
        host_file_dest("h0", "xplane/plugins/profile/run1/h0.xplane.pb").as_posix()
        == "plugins/profile/run1/h0.xplane.pb"
    )
    assert (
        host_file_dest("h1", "xplane/plugins/profile/run1/h1.xplane.pb").as_posix()
        == "plugins/profile/run1/h1.xplane.pb"
    )
    # A host may not write another host's xplane, nor elsewhere in the session tree.
    for bad in (
        "xplane/plugins/profile/run1/h1.xplane.pb",
        "xplane/plugins/x/run1/h0.xplane.pb",
        "xplane/h0.xplane.pb",
    ):
        with pytest.raises(ValueError):
            host_file_dest("h0", bad)


def test_credentials_in_env_are_not_written_down():
    from ray_tpu_profile.rundir.layout import redacted_env

    env = {
        "HF_TOKEN": "hf_x",
        "AWS_SECRET_ACCESS_KEY": "s",
        "FSSPEC_S3_KEY": "k",
        "XLA_HLO_DEBUG": "1",
        "LIBTPU_INIT_ARGS": "--xla_tpu_enable=true",
        "KEYBOARD": "us",
        "VLLM_API_KEY": "v",
    }
    assert redacted_env(env) == {
        "HF_TOKEN": "<redacted>",
        "AWS_SECRET_ACCESS_KEY": "<redacted>",
        "FSSPEC_S3_KEY": "<redacted>",
        "XLA_HLO_DEBUG": "1",
        "LIBTPU_INIT_ARGS": "--xla_tpu_enable=true",
        "KEYBOARD": "us",
        "VLLM_API_KEY": "<redacted>",
    }


def test_credentials_on_the_command_line_are_not_written_down():
    from ray_tpu_profile.rundir.layout import redacted_argv

    argv = [
        "ray-tpu-profile",
        "run",
        "--env",
        "HF_TOKEN=hf_x",
        "--env=FSSPEC_S3_SECRET=s",
        "--env",
        "XLA_HLO_DEBUG=1",
        "--model",
        "a=b",
        "--",
        "--max-model-len",
        "2048",
    ]
    # Only the two credentials change; every other word, engine flags included, is kept as given.
    redacted = {3: "HF_TOKEN=<redacted>", 4: "--env=FSSPEC_S3_SECRET=<redacted>"}
    expected = [redacted.get(i, word) for i, word in enumerate(argv)]
    assert redacted_argv(argv) == expected


def test_host_labels_name_the_engine_only_when_it_spans_hosts():
    from ray_tpu_profile.rundir.layout import host_label

    assert host_label({"name": "w0", "engine": "engine0", "ranks": [0, 1, 2, 3], "worker": None}) == "w0"
    assert (
        host_label({"name": "w1", "engine": "engine0", "ranks": [4, 5, 6, 7], "worker": {"rank": 4}})
        == "w1 (engine0, rank 4, 5, 6, 7)"
    )


def test_a_worker_s_identity_round_trips_with_what_its_backend_added():
    from ray_tpu_profile.core.records import WorkerIdentity

    torch = {"rank": 1, "pid": 42, "node_id": "n1", "socket": None, "trace_dir": "/tmp/t/engine0"}
    jax = {"rank": 0, "pid": 7, "node_id": "n0", "socket": "/tmp/ray-tpu-profile-capture-x/capture.sock"}
    assert WorkerIdentity.from_json(torch).to_json() == torch
    assert WorkerIdentity.from_json(jax).to_json() == jax


def test_secrets_in_flags_and_urls_are_not_written_down():
    """Issue 25: `-- --hf-token ...` and passwords in URLs were recorded verbatim in the
    manifest's command and engine.argv; flags that only mention tokens keep their values."""
    from ray_tpu_profile.rundir.layout import redacted_argv, redacted_url

    argv = [
        "run",
        "--profile-result-dir",
        "sftp://me:hunter2@files.example/runs",
        "--",
        "--hf-token",
        "hf_abc",
        "--api-key=sk-1",
        "--aws_secret",
        "s3cr3t",
        "--max-num-batched-tokens",
        "512",
        "--tokenizer",
        "/models/t",
        "--server-url=http://u:pw@127.0.0.1:8000/v1",
    ]
    assert redacted_argv(argv) == [
        "run",
        "--profile-result-dir",
        "sftp://me:<redacted>@files.example/runs",
        "--",
        "--hf-token",
        "<redacted>",
        "--api-key=<redacted>",
        "--aws_secret",
        "<redacted>",
        "--max-num-batched-tokens",
        "512",
        "--tokenizer",
        "/models/t",
        "--server-url=http://u:<redacted>@127.0.0.1:8000/v1",
    ]
    assert redacted_url("OSError: gs://bucket/x and s3://k:v@b/y") == "OSError: gs://bucket/x and s3://k:<redacted>@b/y"
    assert "hunter2" not in " ".join(redacted_argv(argv))
