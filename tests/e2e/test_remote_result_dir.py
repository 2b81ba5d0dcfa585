"""A remote --profile-result-dir: every host writes its files there itself (not through
the driver), the driver reads back the traces it must check, and writes its manifest and
reports beside them. Real runs on the simulated cluster, through fsspec: `file://` (a
directory every host can reach, as a shared mount would be) and `s3://` against moto's
S3 server on loopback, which stands in for S3 because this machine has no network."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from support.cli import load_manifest, load_report, run_cli
from support.cluster import wait_until_released

SMALL = ["--input-len", "16", "--output-len", "8", "--batch-size", "4", "--num-iters-warmup", "2", "--num-iters", "2"]


def assert_delivered(manifest, read_bytes, backend_suffix):
    """Every file in the manifest is where it says, with its size and sha256; traces were
    read back and checked by the driver."""
    assert manifest["status"] == "ok"
    for host in manifest["hosts"]:
        assert host["status"] == "ok", host["error"]
        traces = [f for f in host["files"] if f["path"].endswith(backend_suffix)]
        assert traces and all(f["verified"] == "sha256" for f in traces)
        for f in host["files"]:
            data = read_bytes(f["path"])
            assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
        assert not Path(host["scratch_dir"]).exists()  # the host's own copy is gone once delivered


def test_file_url_hosts_write_directly(sim_cluster, tmp_path):
    from ray_tpu_profile.analysis.xplane import read_xplane

    root = tmp_path / "shared"
    local_tmp = tmp_path / "driver-tmp"
    local_tmp.mkdir()
    proc = run_cli(
        "run",
        "--address",
        sim_cluster.address,
        "--profile-result-dir",
        f"file://{root}",
        "--profiler",
        "jax",
        "--duration-ms",
        "800",
        *SMALL,
        env={"TMPDIR": str(local_tmp)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(root.iterdir())
    manifest = load_manifest(run_dir)
    assert manifest["result_url"] == f"file://{root}/{run_dir.name}"
    assert f"run directory: file://{root}/{run_dir.name}" in proc.stdout
    assert_delivered(manifest, lambda p: (run_dir / p).read_bytes(), ".xplane.pb")
    # XProf's layout, read by xprof; the driver's reports beside the hosts' files.
    for host in manifest["hosts"]:
        assert read_xplane(run_dir / host["capture"]["xplane"]).events > 0
    assert {"latency.json", "report.json", "report.txt", "timeline.json.gz", "report.png"} <= {
        p.name for p in run_dir.iterdir()
    }
    report = load_report(run_dir)
    assert all(h["top_operations"] for h in report["hosts"])
    # Each host wrote its summary there too, once its traces were in; the driver read it back.
    assert report["summarised_on"] == {h["name"]: "host" for h in manifest["hosts"]}
    assert all(f["verified"] == "sha256" for h in manifest["hosts"] for f in h["files"] if "summary" in f["path"])
    assert not list(local_tmp.glob("ray-tpu-profile-*"))  # the driver's temporary copy is removed
    assert wait_until_released() == ([], [])


def test_s3_url_hosts_write_directly(sim_cluster, tmp_path, s3_server):
    import s3fs

    # fsspec reads FSSPEC_<PROTOCOL>_<ARG> from the environment: the driver gets it from
    # its own, the hosts through --env (credentials there are redacted in the manifest).
    s3_env = {"FSSPEC_S3_ENDPOINT_URL": s3_server, "FSSPEC_S3_KEY": "testing", "FSSPEC_S3_SECRET": "testing"}
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, key="testing", secret="testing")
    fs.mkdir(bucket := f"profiles-{secrets.token_hex(4)}")
    env_flags = [arg for k, v in s3_env.items() for arg in ("--env", f"{k}={v}")]
    proc = run_cli(
        "run",
        "--address",
        sim_cluster.address,
        "--profile-result-dir",
        f"s3://{bucket}/runs",
        *env_flags,
        *SMALL,
        env=s3_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_path,) = fs.ls(f"{bucket}/runs")
    manifest = json.loads(fs.cat_file(f"{run_path}/manifest.json"))
    assert manifest["result_url"] == f"s3://{run_path}"
    assert manifest["engine"]["env"]["FSSPEC_S3_SECRET"] == "<redacted>"
    assert "testing" not in json.dumps(manifest)  # not in engine.env, not in the recorded command
    assert_delivered(manifest, lambda p: fs.cat_file(f"{run_path}/{p}"), ".pt.trace.json.gz")
    # profiler_out.txt went from host to S3 only: the driver never held it (checked by size).
    assert {f["verified"] for h in manifest["hosts"] for f in h["files"] if f["path"].endswith("profiler_out.txt")} == {
        "size"
    }
    assert {"latency.json", "report.json", "timeline.json.gz", "report.png"} <= {
        p.rsplit("/", 1)[1] for p in fs.ls(run_path)
    }
    assert wait_until_released() == ([], [])
