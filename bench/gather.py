"""Gather throughput through Ray vs Ray's own transfer of the same bytes (and a plain local
copy), and the driver's peak memory growth.

4 simulated hosts (local Ray cluster), each with --mb-per-host MB of trace-like files
(random bytes, 4 files) in its own output directory. Measured in the same run:
  cp:       `cp -r` of every host's directory (sequential), data already in page cache
  ray:      the baseline: the same 8 MiB chunks, the same window in flight, pulled with plain
            ray.get from a bare actor on each host and written to files, no hashing, all
            hosts at once
  gather:   the tool's streamed gather (sha256 on host and driver), all hosts at once, as
            the gather stage (stages.py) does
Printed: seconds and MB/s of each, gather throughput as a ratio of Ray's (target >= 0.8)
and of cp's, and the peak growth of the driver's RSS during the gather.

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

from ray_tpu_profile.core.files import CHUNK_BYTES
from ray_tpu_profile.driver.gather import WINDOW_CHUNKS, gather_host
from ray_tpu_profile.placement import cluster
from ray_tpu_profile.rundir.layout import new_run_id

FILES_PER_HOST = 4


@ray.remote(num_cpus=0)
class ChunkReader:
    """Ray's own transfer, nothing else: reads a chunk of a file and returns it."""

    def read(self, path: str, offset: int, size: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)


def pull_plain(reader, files: list[Path], dest: Path) -> None:
    """The gather's chunking and window, without its hashing or checks."""
    from collections import deque

    dest.mkdir(parents=True)
    for path in files:
        size = path.stat().st_size
        offsets = iter(range(0, size, CHUNK_BYTES))
        pending: deque = deque()
        with open(dest / path.name, "wb") as out:
            while True:
                while len(pending) < WINDOW_CHUNKS and (offset := next(offsets, None)) is not None:
                    pending.append(reader.read.remote(str(path), offset, CHUNK_BYTES))
                if not pending:
                    break
                out.write(ray.get(pending.popleft()))


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

            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            readers = {
                h.name: ChunkReader.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(h.node_id, soft=False)
                ).remote()
                for h in hosts
            }
            ray.get([r.read.remote(__file__, 0, 1) for r in readers.values()])  # started before the clock
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(readers)) as pool:
                list(
                    pool.map(
                        lambda name: pull_plain(
                            readers[name], sorted((out_dirs[name] / "xla").iterdir()), scratch / f"ray-{name}"
                        ),
                        readers,
                    )
                )
            ray_s = time.perf_counter() - t0
            shutil.rmtree(scratch)  # page cache and disk as they were for the gather
            scratch.mkdir()

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
    print(f"cp -r:             {cp_s:6.2f} s  {total_mb / cp_s:7.0f} MB/s")
    print(f"Ray, no hashing:   {ray_s:6.2f} s  {total_mb / ray_s:7.0f} MB/s  (baseline: same chunks and window)")
    print(f"gather (verified): {gather_s:6.2f} s  {total_mb / gather_s:7.0f} MB/s  (sha256 on host and driver)")
    print(f"gather throughput / Ray's own: {ray_s / gather_s:.2f}  (target >= 0.8)")
    print(f"gather throughput / cp's: {cp_s / gather_s:.2f}")
    print(f"driver peak RSS growth during gather: {(peak - rss_start) / 2**20:.0f} MB  (target < 256 MB)")


if __name__ == "__main__":
    main()
