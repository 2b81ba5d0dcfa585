"""Run as a script: starts the local simulated cluster as `run` does (cluster.ray_session)
with 1 host, places its actor as the place stage does, and prints JSON: the actor's pid
and the Ray worker processes that existed before place began (prestarted by a raylet, idle
or still starting). argv[1]: "prestart" or "baseline" (ray_session's way before)."""

from __future__ import annotations

import json
import sys

import psutil
import ray

from ray_tpu_profile.placement import cluster


def worker_pids() -> list[int]:
    """This process's Ray worker processes: a raylet's children that run the Python worker
    (its command line until it has started, then its title `ray::IDLE`)."""
    raylets = [p for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
    return [
        p.pid
        for raylet in raylets
        for p in raylet.children()
        if any(part.endswith("default_worker.py") or part.startswith("ray::IDLE") for part in p.cmdline())
    ]


def main() -> None:
    now = sys.argv[1] == "prestart"
    with cluster.ray_session(None, 1, log_to_driver=False, prestart_workers=now, nodes_at_once=now) as info:
        before = worker_pids()
        hosts = cluster.discover_hosts()
        reservation = cluster.reserve_hosts(hosts, "probe", 120.0)
        try:
            env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
            (actor,) = cluster.start_actors(reservation, hosts, "probe", env, set_by="actor").values()
            identity = ray.get(actor.identity.remote(tuple(env)))
        finally:
            reservation.release()
    print(json.dumps({"actor_pid": identity["pid"], "workers_before_place": before, "cluster": info}))


if __name__ == "__main__":
    main()
