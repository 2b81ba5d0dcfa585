"""The driver's own cost to 64 hosts, with stand-in hosts (issue 26).

A real Ray cluster on this machine (one local node: 64 raylets do not fit 2 cores), and one
Ray actor per host: StandInHost. A stand-in is the host's side as the driver sees it: its
actor process (started, identified), its clock echo (the tool's own, host/clock_echo.py),
its reading of its own xplane (profilers.time_window.check_xplane, the tool's own), its
summary of its traces for the reports (host.summaries.HostSummaries, the tool's own), and
its files served to the gather (host.files.HostFiles, the tool's own), holding one real xplane
(a jax capture of the tiny model, tests/data/jax-2hosts: 635 KB) as its trace.

What a stand-in skips, all on the host side and none of it the driver's work: vLLM, the
model's load, warmup and profiled iterations, and the capture itself (its file is copied
into place when the actor starts).

Stages, at each host count, each timed on the driver:
  place     N actors created, until every one has answered identity() (each has read its
            xplane back by then: on 2 shared cores that is in here, on real hosts in parallel)
  clocks    measure_clocks's exchange: echoes opened on every host, 48 UDP round trips to
            each (16 hosts at a time), echoes closed
  barrier   one Barrier.run over every host with a call that does nothing (median of 5):
            what each stage boundary costs
  ray_round the same calls with a bare ray.get (median of 5): Ray's own part of a barrier
            round, the baseline for it
  gather    every host's files (its xplane) into one run directory (gather_host, 16 hosts
            at once)
  verify    the hosts' own xplane readings, one barrier round (they read at once), then
            the driver's check of each gathered file's sha256 against the host's
  summaries every host summarising its own xplane for the reports, one barrier round (host
            work: on 2 shared cores the hosts take turns, on real hosts it is one host's
            time), then each summary gathered (as `run` does, after the traces)
  reports   report.json / report.txt / timeline / plot of the run directory, as `run`
            writes them at its end: the driver merges the hosts' summaries, reads no xplane
  plot      report.png alone, drawn again from the same report (one row per host)
  merge     the reports' merge alone: the hosts' summaries read, report.json built, the
            timeline spliced (reports is about plot + merge)

Printed per stage: seconds at each count, its ratio to the 8-host time (the baseline,
measured in the same run; linear is N / 8), the least-squares cost per host, and the
log-log slope from 16 to 64 hosts (1: linear; above 1.1: super-linear): for the wall
time, and for the driver process's own CPU time (all its threads), which the stand-ins'
64 processes sharing 2 cores do not stretch. With --repeats R,
the counts are run R times in turn (8, 16, 32, 64, 8, 16, ...) and each figure is the
median of its R: one run's slope moved by more than 0.1 from run to run.

    .venv/bin/python bench/driver_scale.py [--hosts 8 16 32 64] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
from scale import fit  # bench/ is on the path: this script is run from it

from ray_tpu_profile.host.clock_echo import ClockEchoHost
from ray_tpu_profile.host.files import HostFiles
from ray_tpu_profile.host.summaries import HostSummaries

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "tests" / "data" / "jax-2hosts"
STAGES = ("place", "clocks", "barrier", "ray_round", "gather", "verify", "summaries", "reports", "plot", "merge")


class StandInHost(ClockEchoHost, HostFiles, HostSummaries):
    """A host as the driver sees it, without vLLM (see the module docstring)."""

    def __init__(self, host_name: str, session: str, xplane: str):
        self.host_name = host_name
        self.output_dir = Path(tempfile.mkdtemp(prefix=f"driver-scale-{host_name}-"))
        dest = self.output_dir / "xplane" / "plugins" / "profile" / session / f"{host_name}.xplane.pb"
        dest.parent.mkdir(parents=True)
        shutil.copyfile(xplane, dest)
        self.session = session
        # Read back where it was written, as a real host does right after its capture
        # (profilers.time_window: in the capture stage, every host at once).
        from ray_tpu_profile.profilers.time_window import check_xplane

        self.check = check_xplane(dest)

    def identity(self) -> dict:
        import os

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def clock_ns(self) -> int:
        return time.time_ns()

    def nothing(self) -> None:
        return None

    def xplane_checks(self) -> dict:
        return {self.session: self.check}


def timed(call) -> tuple[float, float, object]:
    """(wall s, the driver process's CPU s, call's result). CPU counts every thread of this
    process, Ray's own core-worker threads included: the driver's cost, apart from the wall
    time it spends waiting on 64 actor processes that share 2 cores."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def manifest_for(template: dict, run_id: str, session: str, names: list[str], files: dict[str, list]) -> dict:
    """The template run's manifest with its first host cloned once per stand-in."""
    manifest = json.loads(json.dumps(template))
    manifest["run_id"] = run_id
    manifest["capture"]["session"] = session
    first = template["hosts"][0]
    manifest["hosts"] = []
    for i, name in enumerate(names):
        host = json.loads(json.dumps(first))
        host.update(name=name, worker_id=i, engine=f"engine{i}", files=files[name])
        (xplane,) = [f["path"] for f in files[name] if f["path"].endswith(".xplane.pb")]
        host["capture"] = {**host["capture"], "xplane": xplane}
        manifest["hosts"].append(host)
    manifest["engines"] = [
        {**template["engines"][0], "name": f"engine{i}", "hosts": [n], "owner": n, "ranks": {n: [0]}}
        for i, n in enumerate(names)
    ]
    return manifest


def one_count(n: int, template: dict, xplane: Path, work: Path) -> dict[str, float]:
    from ray_tpu_profile.analysis.host_summary import summaries as host_summaries
    from ray_tpu_profile.analysis.plot import write_plot
    from ray_tpu_profile.analysis.report import build_report, write_report
    from ray_tpu_profile.analysis.timeline import DEFAULT_MAX_EVENTS_PER_HOST, write_timeline
    from ray_tpu_profile.core.hosts import Host
    from ray_tpu_profile.core.records import HostRecord
    from ray_tpu_profile.driver import clock_exchange
    from ray_tpu_profile.driver.barrier import Barrier
    from ray_tpu_profile.driver.gather import GATHER_HOSTS_AT_ONCE, gather_host
    from ray_tpu_profile.driver.progress import Progress
    from ray_tpu_profile.driver.stages import driver_node_ip
    from ray_tpu_profile.host.clock_echo import TOKEN_BYTES
    from ray_tpu_profile.placement.cluster import RayHost

    run_id = f"driver-scale-{n}-{secrets.token_hex(3)}"
    session = run_id
    names = [f"standin-{i:03d}" for i in range(n)]
    remote = ray.remote(num_cpus=0)(StandInHost)
    times: dict[str, float] = {}

    actors: dict = {}

    def place() -> None:
        for name in names:
            actors[name] = remote.remote(name, session, str(xplane))
        ray.get([a.identity.remote() for a in actors.values()], timeout=1800)

    times["place"], times["cpu:place"], _ = timed(place)
    try:
        handles = {name: RayHost(a, name) for name, a in actors.items()}
        records = [
            HostRecord(Host(name=name, node_id="", node_ip="", chips=4, worker_id=i)) for i, name in enumerate(names)
        ]
        barrier = Barrier(records, handles, Progress(quiet=True), timeout_s=600)

        def clocks() -> None:
            token, driver_ip = secrets.token_bytes(TOKEN_BYTES), driver_node_ip()
            opened = ray.get([a.open_clock_echo.remote(token, driver_ip) for a in actors.values()])
            try:
                found = clock_exchange.measure_with_fallback(
                    {name: clock_exchange.udp_sampler(tuple(o["address"]), token) for name, o in zip(names, opened)},
                    {},
                )
            finally:
                ray.get([a.close_clock_echo.remote() for a in actors.values()])
            channels = {channel for _, channel in found.values()}
            assert channels == {"udp"}, channels

        times["clocks"], times["cpu:clocks"], _ = timed(clocks)
        rounds = [timed(lambda: barrier.run("warmup", lambda h: h.nothing())) for _ in range(5)]
        times["barrier"], times["cpu:barrier"] = (statistics.median(r[i] for r in rounds) for i in (0, 1))
        # Ray's own share of a round: the same calls with a bare ray.get, no barrier.
        bare = [timed(lambda: ray.get([a.nothing.remote() for a in actors.values()])) for _ in range(5)]
        times["ray_round"], times["cpu:ray_round"] = (statistics.median(r[i] for r in bare) for i in (0, 1))

        run_dir = work / run_id
        run_dir.mkdir()
        files: dict[str, list] = {}

        def gather() -> None:
            def one(name: str) -> None:
                files[name] = gather_host(actors[name], name, run_dir, timeout_s=600)

            with ThreadPoolExecutor(max_workers=GATHER_HOSTS_AT_ONCE) as pool:
                list(pool.map(one, names))

        times["gather"], times["cpu:gather"], _ = timed(gather)

        def verify() -> None:
            checks = barrier.run("verify", lambda h: h.xplane_checks())
            for name in names:
                check = checks[name][session]
                assert check.get("events", 0) > 0, check
                (entry,) = [f for f in files[name] if f["path"].endswith(".xplane.pb")]
                assert entry["sha256"] and entry["bytes"] == xplane.stat().st_size

        times["verify"], times["cpu:verify"], _ = timed(verify)

        from ray_tpu_profile.analysis.host_summary import SUMMARY, TOP_OPERATIONS
        from ray_tpu_profile.analysis.timeline import placements, timeline_origin_ns

        # Where each host's timeline events go, as `run` tells its hosts (stages.summarise).
        planned = manifest_for(template, run_id, session, names, {n: [{"path": ".xplane.pb"}] for n in names})
        at = placements(planned, timeline_origin_ns(planned))

        def summaries() -> None:
            """As `run` does once the traces are in: every host summarises, then its summary is gathered."""
            made = barrier.run("summaries", lambda h: h.summarise(TOP_OPERATIONS, None, None, at[h.name]))
            assert all("error" not in m for m in made.values()), made

            def one(name: str) -> None:
                gather_host(actors[name], name, run_dir, timeout_s=600, gathered=files[name], only={SUMMARY})

            with ThreadPoolExecutor(max_workers=GATHER_HOSTS_AT_ONCE) as pool:
                list(pool.map(one, names))

        times["summaries"], times["cpu:summaries"], _ = timed(summaries)
        (run_dir / "manifest.json").write_text(json.dumps(manifest_for(template, run_id, session, names, files)))
        times["reports"], times["cpu:reports"], report = timed(lambda: write_report(run_dir))
        assert set(report["summarised_on"].values()) == {"host"}, report["summarised_on"]
        # Its two parts again, each on its own: report.png (one row per host, drawn), and
        # the merge (the summaries read, report.json built, the timeline spliced).
        manifest = json.loads((run_dir / "manifest.json").read_text())
        times["plot"], times["cpu:plot"], _ = timed(lambda: write_plot(run_dir, manifest, report["devices"]))

        def merge() -> None:
            found, made_where = host_summaries(run_dir, manifest, DEFAULT_MAX_EVENTS_PER_HOST)
            merged = build_report(run_dir, summaries=found, made_where=made_where)
            write_timeline(run_dir, summaries=found, collectives=merged["collectives"])

        times["merge"], times["cpu:merge"], _ = timed(merge)
        shutil.rmtree(run_dir)
        ray.get([a.cleanup.remote() for a in actors.values()])
    finally:
        for actor in actors.values():
            ray.kill(actor, no_restart=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--repeats", type=int, default=1, help="runs of every count, in turn; medians printed")
    args = parser.parse_args()
    template = json.loads((TEMPLATE / "manifest.json").read_text())
    (xplane,) = sorted(TEMPLATE.glob("plugins/profile/*/local-sim-w0.xplane.pb"))
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.hosts}
    # Imported once before any count: the first count's reports must not pay for them.
    import matplotlib.pyplot  # noqa: F401

    import ray_tpu_profile.analysis.report  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="driver-scale-") as work:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            for repeat in range(args.repeats):
                for n in args.hosts:
                    runs[n].append(one_count(n, template, xplane, Path(work)))
                    times = ", ".join(f"{s} {runs[n][-1][s]:.3f} s" for s in STAGES)
                    print(f"run {repeat + 1}, {n} hosts: {times}", flush=True)
        finally:
            ray.shutdown()
    keys = [*STAGES, *(f"cpu:{s}" for s in STAGES)]
    results = {n: {k: statistics.median(r[k] for r in rs) for k in keys} for n, rs in runs.items()}
    if args.repeats > 1:
        print(f"\nmedians of {args.repeats} runs")
    counts = sorted(results)
    base = counts[0]
    print(f"\nstand-in hosts, xplane {xplane.stat().st_size / 1e6:.2f} MB each; baseline: {base} hosts (same run)")
    header = f"{'stage':<9}" + "".join(f"{f'{n} h s':>10}" for n in counts)
    header += "".join(f"{f'x{n}/{base}':>9}" for n in counts[1:])
    print(header + f"{'per host ms':>13}{'slope':>8}")
    lo = 16 if 16 in results else counts[-2]
    for title, prefix in (("wall time", ""), ("the driver process's CPU time", "cpu:")):
        print(f"{title}:")
        for stage in STAGES:
            ys = [max(results[n][prefix + stage], 1e-6) for n in counts]
            _, per_host, _ = fit(counts, ys)
            slope = math.log(ys[-1] / ys[counts.index(lo)]) / math.log(counts[-1] / lo)
            line = f"{stage:<9}" + "".join(f"{y:10.3f}" for y in ys)
            line += "".join(f"{y / ys[0]:9.2f}" for y in ys[1:])
            print(line + f"{1000 * per_host:13.2f}{slope:8.2f}")
    print(
        f"(linear would be: {', '.join(f'x{n / base:g}' for n in counts[1:])}; slope from {lo} to {counts[-1]} hosts)"
    )


if __name__ == "__main__":
    main()
