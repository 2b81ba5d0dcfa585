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


@dataclass
class MeasuredRun:
    manifest: dict
    wall_s: float
    peak_rss_mb: float  # the CLI process's, from wait4: the largest of it and the children it reaped


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
        # Reaped here with wait4, for its peak RSS (communicate() would reap it without).
        texts: dict[str, str] = {}
        readers = [
            threading.Thread(target=lambda k=k, f=f: texts.__setitem__(k, f.read()))
            for k, f in (("out", proc.stdout), ("err", proc.stderr))
        ]
        for reader in readers:
            reader.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        for reader in readers:
            reader.join()
        wall_s = time.monotonic() - started_s
    if proc.returncode != 0:
        sys.exit(f"{label} failed ({proc.returncode}): {texts['err'][-3000:]}")
    return MeasuredRun(json.loads(texts["out"]), wall_s, usage.ru_maxrss / 1024)
