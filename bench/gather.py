"""Gather throughput through Ray vs a plain local copy of the same files, and the
driver's peak memory growth.

4 simulated hosts (local Ray cluster), each with --mb-per-host MB of trace-like files
(random bytes, 4 files) in its own output directory. Measured in the same run:
  baseline: `cp -r` of every host's directory (sequential), data already in page cache
  gather:   the tool's streamed gather (8 MiB chunks, sha256 on host and driver), all
            hosts at once, as the gather stage (stages.py) does
Printed: seconds and MB/s of each, gather throughput as a ratio of cp's, and the peak
growth of the driver's RSS during the gather.

    .venv/bin/python bench/gather.py [--hosts 4] [--mb-per-host 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import ray

from ray_tpu_profile import cluster
from ray_tpu_profile.gather import gather_host
from ray_tpu_profile.layout import new_run_id

FILES_PER_HOST = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--mb-per-host", type=int, default=256)
    args = parser.parse_args()
    run_id = new_run_id()
    total_mb = args.hosts * args.mb_per_host
    with cluster.ray_session(None, args.hosts, log_to_driver=False):
        hosts = cluster.discover_hosts()
        reservation = cluster.reserve_hosts(hosts, run_id, timeout_s=120)
        scratch = Path(tempfile.mkdtemp(prefix="bench-gather-"))
        try:
            actors = cluster.start_actors(reservation, hosts, run_id, {})
            out_dirs = {name: Path(ray.get(a.identity.remote())["output_dir"]) for name, a in actors.items()}
            file_bytes = args.mb_per_host * 2**20 // FILES_PER_HOST
            for out in out_dirs.values():
                for i in range(FILES_PER_HOST):
                    (out / "xla").mkdir(exist_ok=True)
                    (out / "xla" / f"trace{i}.bin").write_bytes(os.urandom(file_bytes))

            t0 = time.perf_counter()
            for name, out in out_dirs.items():
                subprocess.run(["cp", "-r", str(out), str(scratch / f"cp-{name}")], check=True)
            cp_s = time.perf_counter() - t0

            process = psutil.Process()
            rss_start = peak = process.memory_info().rss
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.wait(0.01):
                    peak = max(peak, process.memory_info().rss)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            run_dir = scratch / "run"
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(actors)) as pool:
                results = list(pool.map(lambda item: gather_host(item[1], item[0], run_dir, 600), actors.items()))
            gather_s = time.perf_counter() - t0
            done.set()
            sampler.join()
            assert sum(len(r) for r in results) == args.hosts * FILES_PER_HOST
        finally:
            ray.get([a.cleanup.remote() for a in reservation.actors.values()])
            reservation.release()
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"hosts: {args.hosts} x {args.mb_per_host} MB ({FILES_PER_HOST} files each), {total_mb} MB in all")
    print(f"cp -r (baseline): {cp_s:6.2f} s  {total_mb / cp_s:7.0f} MB/s")
    print(f"gather via Ray:   {gather_s:6.2f} s  {total_mb / gather_s:7.0f} MB/s  (sha256 on host and driver)")
    print(f"gather throughput / cp throughput: {cp_s / gather_s:.2f}  (target >= 0.5)")
    print(f"driver peak RSS growth during gather: {(peak - rss_start) / 2**20:.0f} MB  (target < 256 MB)")


if __name__ == "__main__":
    main()
