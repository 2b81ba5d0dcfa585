"""A 4-shape sweep (one model load per host) against 4 separate runs of the same shapes.

Runs the CLI as a user would on the embedded default (local cluster, 2 simulated hosts,
tiny model), in the same session: first the 4 separate `run`s, then one `run` with
--shape x4. Printed: total wall time of each way and their ratio, and from the measured
parts (model load per run) what the ratio becomes when loading takes minutes.

    .venv/bin/python bench/sweep.py [--load-s 300]
"""

from __future__ import annotations

import argparse

from run_cli import run_measured

SHAPES = ["1x64x1", "4x16x16", "8x8x32", "2x32x8"]


def run(*flags: str) -> tuple[float, dict]:
    """One run of the embedded default with flags: its wall time in seconds and its manifest."""
    measured = run_measured("--num-iters-warmup", "3", *flags, label=f"run {flags}")
    return measured.wall_s, measured.manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-s", type=float, default=300.0, help="model load time to extrapolate to (a 70B model)")
    args = parser.parse_args()
    separate = [run("--shape", shape) for shape in SHAPES]
    separate_s = sum(wall for wall, _ in separate)
    sweep_s, sweep_manifest = run(*[a for s in SHAPES for a in ("--shape", s)])
    load_s = [m["timings_s"]["load"] for _, m in separate] + [sweep_manifest["timings_s"]["load"]]
    per_run_fixed_s = [wall - m["timings_s"]["load"] for wall, m in separate]
    print(f"shapes: {', '.join(SHAPES)} (2 simulated hosts, tiny model)")
    print(f"4 separate runs: {separate_s:7.1f} s  ({', '.join(f'{w:.1f}' for w, _ in separate)})")
    print(f"one sweep:       {sweep_s:7.1f} s")
    print(f"sweep / separate: {sweep_s / separate_s:.2f}")
    mean_load = sum(load_s) / len(load_s)
    print(f"model load per run (driver-side stage, measured): mean {mean_load:.1f} s")
    # With a model that loads in L s: separate = 4 * (fixed + L); sweep = sweep_without_load + L.
    fixed = sum(per_run_fixed_s)
    sweep_rest = sweep_s - sweep_manifest["timings_s"]["load"]
    for load in (mean_load, args.load_s):
        print(f"if load took {load:6.0f} s: sweep / separate = {(sweep_rest + load) / (fixed + 4 * load):.2f}")


if __name__ == "__main__":
    main()
