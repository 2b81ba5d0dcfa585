"""`ray-tpu-profile`: the command line. Thin: flags -> RunConfig -> Run -> output."""

from __future__ import annotations

import json
import math
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ray_tpu_profile import __version__
from ray_tpu_profile.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_STOPPED,
    ConfigError,
    RunStopped,
)

EXIT_BY_STATUS = {"ok": EXIT_OK, "partial": EXIT_PARTIAL, "failed": EXIT_FAILED, "stopped": EXIT_STOPPED}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ray-tpu-profile")
def cli() -> None:
    """Profile vLLM on every host of a TPU pod slice at once, orchestrated by Ray.

    Run it as a Ray job (`ray job submit -- ray-tpu-profile run ...`), or with no
    cluster at all: without --address or RAY_ADDRESS it starts a local Ray cluster of
    simulated TPU hosts and profiles a tiny built-in model on the CPU.
    """


EPILOG = """\b
Examples (the seed's two, on every host of the slice):
  ray-tpu-profile run --model Qwen/Qwen2.5-7B-Instruct --input-len 1024 --output-len 1 \\
      --batch-size 1 -- --max-model-len 2048 --tensor-parallel-size 1 --enforce-eager
  ray-tpu-profile run --model meta-llama/Llama-3.1-70B-Instruct --input-len 1 --output-len 128 \\
      --batch-size 32 --delay-ms 1000 --duration-ms 2000 -- --max-model-len 2048 \\
      --tensor-parallel-size 8 --enforce-eager

Exit codes: 0 ok, 2 bad input, 3 partial (some hosts failed), 4 failed, 5 stopped."""


def _parse_env(ctx, param, values):
    pairs = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        pairs.append((key, value))
    return tuple(pairs)


TIMELINE_EVENTS_OPTION = click.option(
    "--timeline-max-events",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    metavar="N",
    help="timeline.json.gz keeps each host's N longest trace events (all of the tool's own); "
    "the rule and what was dropped are in the file's otherData.",
)


def config_option(kind: type, name: str, **overrides):
    """A click option made from a config field: flag name, default and help are the
    field's (config.flag), written once there."""
    from ray_tpu_profile.config import flag_fields

    spec = flag_fields(kind)[name]
    options = dict(spec.metadata)
    flag_name, choices = options.pop("flag"), options.pop("choices", None)
    default = str(spec.default) if isinstance(spec.default, Path) else spec.default
    if choices:
        options["type"] = click.Choice(choices)
    options.setdefault("show_default", default not in (None, ()))
    if options.get("envvar"):
        options["help"] += f" [env {options['envvar']}]"
    return click.option(flag_name, name, default=default, **{**options, **overrides})


def attach_options(command):
    """attach's flags, from AttachConfig's fields (config.flag), plus --list."""
    from ray_tpu_profile.config import AttachConfig

    options = [
        config_option(AttachConfig, "address"),
        config_option(AttachConfig, "name"),
        click.option(
            "--list",
            "list_only",
            is_flag=True,
            help="List the registered processes (host, pid, role, capture socket); capture nothing.",
        ),
        *(
            config_option(AttachConfig, name)
            for name in (
                "duration_ms",
                "allow_long_capture",
                "delay_ms",
                "profile_result_dir",
                "server_url",
                "python_tracer_level",
                "real_time_start",
                "timeout_s",
                "max_clock_uncertainty_ms",
            )
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def run_options(command):
    """The flags `run` and `plan` share: plan shows what run would do with them."""
    from ray_tpu_profile.config import Capture, Placement, RunConfig, Workload

    options = [
        config_option(Placement, "address"),
        config_option(Placement, "slice_name"),
        config_option(Placement, "hosts"),
        config_option(RunConfig, "model"),
        click.option(
            "--shape",
            "shapes",
            multiple=True,
            metavar="BxIxO",
            help="A sweep: profile each BATCHxINPUTxOUTPUT shape in turn (repeatable, e.g. --shape 1x1024x1 "
            "--shape 32x1x128) on one model load per host; each shape is its own XProf session.",
        ),
        click.option(
            "--shapes-file",
            type=click.Path(path_type=Path),
            default=None,
            metavar="TOML",
            help='A sweep from a TOML file: shapes = ["1x1024x1", "32x1x128"].',
        ),
        *(
            config_option(Workload, name)
            for name in ("input_len", "output_len", "batch_size", "num_iters_warmup", "num_iters")
        ),
        config_option(RunConfig, "profile_result_dir"),
        *(
            config_option(Capture, name)
            for name in (
                "profiler",
                "port",
                "server_wait_s",
                "phase",
                "delay_ms",
                "duration_ms",
                "python_tracer_level",
                "real_time_start",
                "clock_correction",
                "max_clock_uncertainty_ms",
            )
        ),
        config_option(Placement, "env", callback=_parse_env),
        config_option(Placement, "stage_timeout_s"),
        config_option(Placement, "chips_per_host"),
        click.option("--json", "json_output", is_flag=True, help="Print JSON on stdout instead of the table."),
        click.argument("engine_flags", nargs=-1, type=click.UNPROCESSED, metavar="[-- VLLM ENGINE FLAGS...]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _given(ctx, name: str) -> bool:
    """Whether the user set a flag (command line or its env var), not its default."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def config_from(params: dict, ctx=None):
    """RunConfig from the shared flags, validated (ConfigError names the flag)."""
    from ray_tpu_profile.config import RunConfig

    return RunConfig.from_flags(params, (lambda name: _given(ctx, name)) if ctx is not None else (lambda name: True))


@cli.command(epilog=EPILOG)
@run_options
@click.option("--quiet", "-q", is_flag=True, help="No progress lines (failures still print).")
@click.option("--actor-logs", is_flag=True, help="Stream the actors' (vLLM's) logs to this console.")
@TIMELINE_EVENTS_OPTION
def run(quiet, actor_logs, timeline_max_events, **params) -> None:
    """Profile the same workload on every host, captured together, gathered into one run directory.

    Everything after `--` is a vLLM engine flag, parsed by vLLM's own EngineArgs
    (e.g. `-- --tensor-parallel-size 8 --max-model-len 2048 --enforce-eager`).
    """
    config = config_from(params, click.get_current_context())
    from ray_tpu_profile.analysis.report import print_summary
    from ray_tpu_profile.driver import pipeline
    from ray_tpu_profile.driver.progress import Progress

    progress = Progress(quiet=quiet)
    run = pipeline.execute(config, ["ray-tpu-profile", *sys.argv[1:]], progress, actor_logs, timeline_max_events)
    manifest = run.manifest()
    if params["json_output"]:
        click.echo(json.dumps(manifest, indent=2))
    else:
        print_summary(manifest, run.location)
    sys.exit(EXIT_BY_STATUS[manifest["status"]])


@cli.command(epilog="Takes exactly the flags of `run`; use it to check a submission before spending TPU time.")
@run_options
def plan(**params) -> None:
    """Show what `run` would do with these flags: slices, hosts, chips, actors, workload. Loads no model."""
    config = config_from(params, click.get_current_context())
    from ray_tpu_profile.analysis.report import print_plan
    from ray_tpu_profile.driver.pipeline import plan as plan_run

    planned = plan_run(config, ["ray-tpu-profile", *sys.argv[1:]])
    if params["json_output"]:
        click.echo(json.dumps(planned, indent=2))
    else:
        print_plan(planned)


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "json_output", is_flag=True, help="Print report.json's content instead of the table.")
@click.option(
    "--write",
    is_flag=True,
    help="(Re)write report.json, report.txt, timeline.json.gz and report.png in RUN_DIR (`run` writes them itself).",
)
@TIMELINE_EVENTS_OPTION
def report(run_dir: Path, json_output: bool, write: bool, timeline_max_events: int) -> None:
    """Summarise a run directory: per-host latency statistics, capture skew, the slowest
    host, top operations by self time from each host's trace, failures."""
    from ray_tpu_profile.analysis.report import build_report, print_report, write_report
    from ray_tpu_profile.rundir.layout import MANIFEST

    if not (run_dir / MANIFEST).is_file():
        raise ConfigError("RUN_DIR", str(run_dir), f"has no {MANIFEST} (not a ray-tpu-profile run directory)")
    ctx = click.get_current_context()
    if not write and ctx.get_parameter_source("timeline_max_events") != click.core.ParameterSource.DEFAULT:
        raise ConfigError("--timeline-max-events", str(timeline_max_events), "only applies with --write")
    if write:
        built = write_report(run_dir, timeline_max_events, lambda text: click.echo(text, err=True))
    else:
        built = build_report(run_dir)
    if json_output:
        click.echo(json.dumps(built, indent=2))
    else:
        print_report(built)


@cli.command(
    epilog="""\b
Exit codes: 0 compared; 1 --fail-above was given and some host/shape is slower by more
than PCT, or could not have been seen to be (see --fail-above); 2 bad input (not a run
directory, no manifest, PCT not a number)."""
)
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option("--json", "json_output", is_flag=True, help="Print the diff as one JSON object instead of the table.")
@click.option(
    "--write",
    "write_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    metavar="DIR",
    help="Also write diff.json, diff.txt and diff.png into DIR.",
)
@click.option(
    "--fail-above",
    type=float,
    default=None,
    metavar="PCT",
    help="Exit 1 when some host/shape is 'slower' (see above) by more than PCT percent: a CI gate. "
    "A host/shape with 'too few samples', or 'within noise' where the smallest ratio the test could "
    "call slower is above PCT, fails it too: the gate could not have seen such a regression.",
)
@click.option(
    "--allow-few-samples",
    is_flag=True,
    help="With --fail-above: fail only on 'slower' rows, passing rows the samples cannot decide.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    metavar="N",
    help="Operations listed per host among the increases and among the decreases.",
)
def diff(
    run_a: str,
    run_b: str,
    json_output: bool,
    write_dir: Path | None,
    fail_above: float | None,
    allow_few_samples: bool,
    top: int,
) -> None:
    """What changed from RUN_A to RUN_B (run directories, or result URLs), per host and shape.

    \b
    Latency: the iterations after the first warmup one plus the profiled ones, per side.
    The verdict is a Mann-Whitney rank test on their logarithms (exact for the sizes runs
    have, two-sided at 5%, deterministic) with its distribution-free 95% interval of B/A:
    "slower" when the interval lies above 1, "faster" below 1; "too few samples" under 5
    iterations a side (the row says how many decide a 10% change at the noise seen); else
    "within noise", with the smallest ratio the test could have called slower. Each side's
    spread is the median absolute deviation over the median. Hosts are matched by name
    (and engine), shapes by shape; what is only in one run is listed. Operations: self
    time per profiled iteration from each host's own traces (the profiler's and the tool's
    own spans left out, engine steps counted apart), as added / removed / increased /
    decreased / unchanged (5%); runs of different profilers are compared on latency only.
    Hosts: the slowest host and skew of each run, and whether some hosts regressed while
    others did not.
    """
    import tempfile

    from ray_tpu_profile.analysis.diff import diff_runs, open_run
    from ray_tpu_profile.analysis.diff_output import print_diff, write_diff

    if fail_above is not None and not (fail_above >= 0 and math.isfinite(fail_above)):
        raise ConfigError("--fail-above", str(fail_above), "must be a percentage, 0 or more")
    if allow_few_samples and fail_above is None:
        raise ConfigError("--allow-few-samples", "true", "only applies with --fail-above")
    with tempfile.TemporaryDirectory(prefix="ray-tpu-profile-diff-") as scratch:
        a = open_run(run_a, "A", Path(scratch))
        b = open_run(run_b, "B", Path(scratch))
        result = diff_runs(a, b, top)
    if write_dir is not None:
        for path in write_diff(result, write_dir):
            click.echo(f"wrote {path}", err=True)
    if json_output:
        click.echo(json.dumps(result, indent=2))
    else:
        from rich.console import Console

        # Not a terminal (a CI log, a pipe): rich would assume 80 columns and cut host names.
        print_diff(result, Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160))
    if fail_above is not None:
        _gate_diff(result, fail_above, allow_few_samples)


def _gate_diff(result: dict, fail_above: float, allow_few_samples: bool) -> None:
    """The --fail-above CI gate: says which host/shapes fail it, on stderr, and exits 1 if any do."""
    from ray_tpu_profile.analysis.diff import gate_failures

    over, blind = gate_failures(result, fail_above, allow_few_samples)
    if over:
        click.echo(
            f"ray-tpu-profile: slower by more than {fail_above:g}%: "
            + ", ".join(f"{r['what']} {100 * (r['ratio'] or 1) - 100:+.1f}%" for r in over),
            err=True,
        )
    if blind:
        click.echo(
            f"ray-tpu-profile: could not have seen a {fail_above:g}% regression (--allow-few-samples "
            "to pass these): " + ", ".join(f"{r['what']} {r['verdict']}: {r['note']}" for r in blind),
            err=True,
        )
    if over or blind:
        sys.exit(1)


@cli.command(
    epilog="""\b
Enable it in the deployment first (nothing is restarted by attach):
  RAY_TPU_PROFILE_ATTACH=1 vllm serve MODEL ...         (one host)
  runtime_env={"env_vars": {"RAY_TPU_PROFILE_ATTACH": "1"}}   (Ray, Ray Serve LLM)
Exit codes: 0 ok, 2 bad input (nothing registered, --name matching nothing), 3 partial
(some processes failed), 4 failed."""
)
@attach_options
@click.option("--json", "json_output", is_flag=True, help="Print JSON on stdout instead of the table.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines (failures still print).")
def attach(list_only: bool, json_output: bool, quiet: bool, **flags: Any) -> None:
    """Profile a live vLLM deployment on every host at one instant, under its real traffic.

    Finds the vLLM processes registered for it (the package's vLLM plugin, on with
    RAY_TPU_PROFILE_ATTACH=1, opens a capture socket in each: a Unix socket only their user can
    use, no port), warms a capture up in each, then traces all of them
    from one instant for --duration-ms and writes a run directory like `run`'s (manifest
    mode "attach", one XProf session, reports, timeline). The deployment keeps serving.
    """
    from ray_tpu_profile.analysis.report import print_summary
    from ray_tpu_profile.attach import command as attaching
    from ray_tpu_profile.config import AttachConfig
    from ray_tpu_profile.driver.progress import Progress

    config = AttachConfig(**flags)  # every other flag is an AttachConfig field (attach_options)
    config.validate(list_only)
    if list_only:
        with attaching.AttachSession(config.address) as session:
            found = attaching.find_servers(session, config.timeout_s)
            for problem in session.problems:
                click.echo(f"ray-tpu-profile: registry entry skipped: {problem}", err=True)
            attaching.chosen_servers(found, config)
        _echo_servers(attaching.listing(found, config.name), json_output)
        return
    with _stdout_to_stderr():  # the profiler client, traced here, prints to fd 1: stdout stays for --json
        manifest, location = attaching.execute(config, ["ray-tpu-profile", *sys.argv[1:]], Progress(quiet=quiet))
    if json_output:
        click.echo(json.dumps(manifest, indent=2))
    else:
        print_summary(manifest, location)
        load = manifest.get("load")
        if load:
            from ray_tpu_profile.analysis.server_load import describe

            click.echo(describe(load) if "error" not in load else f"server load: not read ({load['error']})")
    sys.exit(EXIT_BY_STATUS[manifest["status"]])


def _echo_servers(listed: list[dict], json_output: bool) -> None:
    """`attach --list`: the registered processes, one line each (host, pid, role, profiler,
    name, capture socket), or as JSON."""
    if json_output:
        click.echo(json.dumps(listed, indent=2))
    else:
        for s in listed:
            role = s["role"] + (str(s["rank"]) if s["rank"] is not None else "")
            click.echo(
                f"{s['host']:<16} pid {s['pid']:<8} {role:<12} {s['profiler']:<4} {s['name'] or '-':<16} {s['socket']}"
            )


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", type=int, default=None, metavar="PORT", help="HTTP port. Default: a free one.")
def view(run_dir: Path, port: int | None) -> None:
    """Open a run in XProf: its web UI on 127.0.0.1 only (a free port unless --port), with
    no capture button; prints the URL, stops on Ctrl-C. From another machine: an SSH tunnel
    (ssh -L PORT:127.0.0.1:PORT host)."""
    import importlib.util
    import subprocess

    from ray_tpu_profile.profilers.time_window import free_local_port
    from ray_tpu_profile.rundir.view_server import LOOPBACK

    if importlib.util.find_spec("xprof") is None:
        raise ConfigError("view", str(run_dir), "needs XProf, which is not installed here: pip install xprof")
    port = port or free_local_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ray_tpu_profile.rundir.view_server", str(run_dir.resolve()), str(port)]
    )
    click.echo(f"XProf for {run_dir}: http://{LOOPBACK}:{port}/  (Ctrl-C to stop)", err=True)
    # Ctrl-C and SIGTERM both end the viewer; the server gets SIGTERM and is waited for.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        code = server.wait()
    except KeyboardInterrupt:
        server.terminate()
        code = 0 if server.wait(timeout=30) in (0, -signal.SIGTERM) else server.returncode
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


@contextmanager
def _stdout_to_stderr():
    """File descriptor 1 goes to stderr for the block (C++ code in this process writes
    there directly, past sys.stdout)."""
    import os

    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main() -> None:
    """Console entry point: bad input is one line on stderr and exit code 2."""
    try:
        code = cli.main(standalone_mode=False)
    except ConfigError as e:
        click.echo(f"ray-tpu-profile: error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except click.exceptions.UsageError as e:
        # click's own multi-line usage block, reduced to the one line that matters.
        click.echo(f"ray-tpu-profile: error: {e.format_message()}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except click.exceptions.Abort:
        click.echo("ray-tpu-profile: aborted", err=True)
        sys.exit(EXIT_STOPPED)
    except RunStopped as e:  # before a run directory was begun: nothing to keep, nothing written
        click.echo(f"ray-tpu-profile: {e}", err=True)
        sys.exit(EXIT_STOPPED)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
