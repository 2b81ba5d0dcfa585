"""The local simulated cluster's start and place, the way `run` does them now against the
way before (the baseline), measured in the same run:
  now:      each host's raylet starts its worker as it starts (cluster.LOCAL_SYSTEM_CONFIG),
            and the hosts register side by side (cluster.ray_session's nodes_at_once);
  baseline: each host waited for in turn, and each actor waits for Ray to start a Python
            process and import Ray once it is placed.

Per host count, --trials of each way in turn: a fresh local cluster (cluster.ray_session,
its start timed), then place as the place stage does it (the whole slice's placement group, one
HostActor per host without a runtime_env, each asked where it runs), then released.
Printed: medians of cluster start, place and their sum each way, now as a ratio of the
baseline; and how many actors ran in a process started before place began (a
prestarted worker).

    .venv/bin/python bench/place.py [--hosts 1 2 4 8] [--trials 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import ray

from ray_tpu_profile.placement import cluster

ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # the tool's own env, set by the actor as in `run`


def one_trial(hosts: int, now: bool, trial: int) -> dict[str, float]:
    started = time.monotonic()
    with cluster.ray_session(None, hosts, log_to_driver=False, prestart_workers=now, nodes_at_once=now):
        cluster_start_s = time.monotonic() - started
        found = cluster.discover_hosts()
        place_started, place_started_ticks = time.monotonic(), boot_ticks()
        reservation = cluster.reserve_hosts(found, f"bench{trial}", 120.0, whole_slice=True)
        try:
            actors = cluster.start_actors(reservation, found, f"bench{trial}", ENV, set_by="actor")
            identities = ray.get([a.identity.remote(tuple(ENV)) for a in actors.values()])
            place_s = time.monotonic() - place_started
            prestarted = sum(started_ticks(i["pid"]) < place_started_ticks for i in identities)
            ray.get([a.cleanup.remote() for a in actors.values()])  # each actor's scratch directory
        finally:
            reservation.release()
    return {"cluster_start": cluster_start_s, "place": place_s, "prestarted": prestarted}


TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def boot_ticks() -> int:
    """Now, in clock ticks since boot: the clock /proc/<pid>/stat's start time is on."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * TICKS_PER_S)


def started_ticks(pid: int) -> int:
    """When the process started, in clock ticks since boot (not psutil's create_time, which
    adds the boot time in whole seconds: off by up to 1 s)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[19])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for hosts in args.hosts:
        runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for trial in range(args.trials):
            for now in (True, False) if trial % 2 == 0 else (False, True):
                r = one_trial(hosts, now, trial)
                runs[now].append(r)
                print(
                    f"{hosts} host(s), {'now     ' if now else 'baseline'}: cluster start "
                    f"{r['cluster_start']:.3f} s, place {r['place']:.3f} s, actors in a prestarted worker "
                    f"{r['prestarted']:.0f}/{hosts}",
                    flush=True,
                )
        med = {
            way: {k: statistics.median(r[k] for r in rs) for k in ("cluster_start", "place")}
            for way, rs in runs.items()
        }
        for way in med:
            med[way]["sum"] = statistics.median(r["cluster_start"] + r["place"] for r in runs[way])
        rows.append((hosts, med, sum(r["prestarted"] for r in runs[True]), sum(r["prestarted"] for r in runs[False])))
    print(f"\nmedians of {args.trials} trials each way (ratio: now / baseline, same run)")
    print(f"{'hosts':>5} {'measure':<14}{'now s':>14}{'baseline s':>12}{'ratio':>8}")
    for hosts, med, on_count, off_count in rows:
        for key in ("cluster_start", "place", "sum"):
            on, off = med[True][key], med[False][key]
            print(f"{hosts:>5} {key:<14}{on:>14.3f}{off:>12.3f}{on / off:>8.2f}")
        total = hosts * args.trials
        print(f"{hosts:>5} {'prestarted':<14}{on_count:>11}/{total}{off_count:>9}/{total}")


if __name__ == "__main__":
    main()
