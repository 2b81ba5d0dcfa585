"""Run as a script: starts the local simulated cluster as `run` does (cluster.ray_session)
with 2 hosts, reserves them as the place stage does (the whole slice: Ray's
SlicePlacementGroup) and, once over a second has passed (Ray's idle-worker killer takes
workers idle longer), starts their actors; prints JSON: the actors' pids and the Ray
worker processes that existed before place began (prestarted by a raylet, idle or still
starting). argv[1]: "prestart" or "baseline" (ray_session's way before)."""

from __future__ import annotations

import json
import sys
import time

import psutil
import ray

from ray_tpu_profile.placement import cluster


def worker_pids(started_only: bool = False) -> list[int]:
    """This process's Ray worker processes: a raylet's children that run the Python worker
    (its command line until it has started, then its title `ray::IDLE`; started_only: those
    with the title)."""
    raylets = [p for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
    return [
        p.pid
        for raylet in raylets
        for p in raylet.children()
        if any(
            (not started_only and part.endswith("default_worker.py")) or part.startswith("ray::IDLE")
            for part in p.cmdline()
        )
    ]


def wait_until_started(count: int, deadline_s: float = 120.0) -> None:
    """Until count prestarted workers have started: the probe checks that they are kept and
    taken, not how soon they start on a busy machine."""
    end = time.monotonic() + deadline_s
    while len(worker_pids(started_only=True)) < count:
        if time.monotonic() > end:
            raise TimeoutError(f"{count} prestarted workers not started in {deadline_s:.0f} s: {worker_pids()}")
        time.sleep(0.1)


IDLE_KILLED_AFTER_S = 1.0
"""Ray's idle_worker_killing_time_threshold_ms, its default."""
HOSTS = 2


def main() -> None:
    now = sys.argv[1] == "prestart"
    with cluster.ray_session(None, HOSTS, log_to_driver=False, prestart_workers=now, nodes_at_once=now) as info:
        if now:
            wait_until_started(HOSTS)
        before = worker_pids()
        hosts = cluster.discover_hosts()
        reservation = cluster.reserve_hosts(hosts, "probe", 120.0, whole_slice=True)
        try:
            # Not a synchronisation: the workers must outlive an idle time the killer acts on.
            time.sleep(IDLE_KILLED_AFTER_S + 0.5)
            env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
            actors = cluster.start_actors(reservation, hosts, "probe", env, set_by="actor")
            identities = ray.get([a.identity.remote(tuple(env)) for a in actors.values()])
            ray.get([a.cleanup.remote() for a in actors.values()])  # each actor's scratch directory
        finally:
            reservation.release()
    print(
        json.dumps(
            {
                "actor_pids": [i["pid"] for i in identities],
                "reservation": reservation.kind,
                "workers_before_place": before,
                "cluster": info,
            }
        )
    )


if __name__ == "__main__":
    main()
