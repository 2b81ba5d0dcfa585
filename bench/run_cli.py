"""One `ray-tpu-profile run` as a user runs it (the CLI in its own process), for the
benchmarks: its manifest, its wall time and its peak RSS.

    from run_cli import run_measured  # bench/ is on sys.path when a benchmark runs as a script
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

POLL_S = 0.05
"""How often the CLI's peak RSS is read."""


@dataclass
class MeasuredRun:
    manifest: dict
    wall_s: float
    peak_rss_mb: float
    """The CLI process's own peak RSS (its VmHWM, read while it runs). Not wait4's ru_maxrss:
    that is the largest of it and every child it reaped, and the CLI reaps the local
    cluster's raylets and GCS."""


def run_measured(*flags: str, label: str) -> MeasuredRun:
    """`run --json --quiet` with flags into a temporary directory; exits the benchmark, naming label, if it fails."""
    with tempfile.TemporaryDirectory() as out:
        started_s = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ray_tpu_profile", "run", "--json", "--quiet", "--profile-result-dir", out, *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        texts: dict[str, str] = {}
        readers = [
            threading.Thread(target=lambda k=k, f=f: texts.__setitem__(k, f.read()))
            for k, f in (("out", proc.stdout), ("err", proc.stderr))
        ]
        peak_kb = [0]
        exited = threading.Event()
        watcher = threading.Thread(target=_watch_peak_rss, args=(proc.pid, exited, peak_kb))
        for thread in (*readers, watcher):
            thread.start()
        # Left unreaped (WNOWAIT) until the watcher has stopped: its pid cannot be reused
        # under the watcher's reads.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        exited.set()
        watcher.join()
        proc.wait()
        for reader in readers:
            reader.join()
        wall_s = time.monotonic() - started_s
    if proc.returncode != 0:
        sys.exit(f"{label} failed ({proc.returncode}): {texts['err'][-3000:]}")
    return MeasuredRun(json.loads(texts["out"]), wall_s, peak_kb[0] / 1024)


def _watch_peak_rss(pid: int, exited: threading.Event, peak_kb: list[int]) -> None:
    """The process's VmHWM, read every POLL_S until it has exited (a high-water mark: the
    last reading is the peak, up to what its last POLL_S added)."""
    while True:
        with open(f"/proc/{pid}/status") as status:  # there until reaped (a zombie's has no VmHWM)
            for line in status:
                if line.startswith("VmHWM:"):
                    peak_kb[0] = max(peak_kb[0], int(line.split()[1]))
        if exited.wait(POLL_S):
            return
