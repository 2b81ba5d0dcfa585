"""`ray job submit` as users run it: a real Ray head with the dashboard on a loopback
port, simulated TPU hosts, the CLI as the job's entrypoint with a runtime_env."""

from __future__ import annotations

import sys
import time

import pytest

from support.cli import load_manifest, wait_for_stage
from support.cluster import wait_until_released

SMALL = "--input-len 16 --output-len 8 --batch-size 4 --num-iters-warmup 2"


def wait_for_job(client, job_id, states, deadline_s=300):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        status = client.get_job_status(job_id)
        if status in states:
            return status
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {client.get_job_status(job_id)} after {deadline_s} s")


@pytest.fixture(scope="module")
def jobs(sim_cluster):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(sim_cluster.dashboard_url)


def test_job_submit_runs_and_writes_the_run_directory(jobs, tmp_path):
    from ray.job_submission import JobStatus

    job_id = jobs.submit_job(
        entrypoint=f"{sys.executable} -m ray_tpu_profile run --profile-result-dir {tmp_path} {SMALL}",
        runtime_env={"env_vars": {"XLA_HLO_DEBUG": "1"}},
    )
    status = wait_for_job(jobs, job_id, {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED})
    logs = jobs.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    manifest = load_manifest(run_dir)
    assert manifest["status"] == "ok" and manifest["cluster"]["kind"] == "existing"
    assert len(manifest["hosts"]) == 2 and all(h["files"] for h in manifest["hosts"])
    assert f"run directory: {run_dir}" in logs


def test_job_stop_during_warmup_releases_everything_and_keeps_the_run(jobs, tmp_path):
    from ray.job_submission import JobStatus

    job_id = jobs.submit_job(
        entrypoint=f"{sys.executable} -m ray_tpu_profile run --profile-result-dir {tmp_path} "
        f"--input-len 16 --output-len 16 --batch-size 4 --num-iters-warmup 300",
    )
    wait_for_stage(tmp_path, "warmup")
    jobs.stop_job(job_id)
    stopped_at = time.monotonic()
    assert (
        wait_for_job(jobs, job_id, {JobStatus.STOPPED, JobStatus.FAILED, JobStatus.SUCCEEDED}, 60) == JobStatus.STOPPED
    )
    assert wait_until_released(deadline_s=max(0.0, 10 - (time.monotonic() - stopped_at))) == ([], [])
    (run_dir,) = list(tmp_path.iterdir())
    manifest = load_manifest(run_dir)
    assert (manifest["status"], manifest["stage"]) == ("stopped", "warmup")
    assert "SIGTERM" in manifest["error"]
