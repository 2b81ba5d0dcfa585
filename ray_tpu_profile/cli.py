"""`ray-tpu-profile`: the command line. Thin: flags -> RunConfig -> Run -> output."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from ray_tpu_profile import __version__
from ray_tpu_profile.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_STOPPED,
    ConfigError,
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
    "--timeline-max-events", type=click.IntRange(min=1), default=100_000, show_default=True, metavar="N",
    help="timeline.json.gz keeps each host's N longest trace events (all of the tool's own); "
         "the rule and what was dropped are in the file's otherData.")


def run_options(command):
    """The flags `run` and `plan` share: plan shows what run would do with them."""
    options = [
        click.option("--address", envvar="RAY_ADDRESS", default=None, metavar="ADDR",
                     help="Ray cluster to run on [env RAY_ADDRESS]. Without it: a local cluster of simulated TPU hosts."),
        click.option("--slice", "slice_name", default=None, metavar="NAME",
                     help="TPU slice to profile (ray.io/tpu-slice-name). Default: the only slice in the cluster."),
        click.option("--hosts", type=int, default=None, metavar="N",
                     help="Hosts to profile. Default: every host of the slice (2 simulated hosts locally)."),
        click.option("--model", default=None, metavar="PATH|ID",
                     help="Model path or hub id. Default: a tiny random-weight Llama built locally on first use."),
        click.option("--shape", "shapes", multiple=True, metavar="BxIxO",
                     help="A sweep: profile each BATCHxINPUTxOUTPUT shape in turn (repeatable, e.g. --shape 1x1024x1 "
                          "--shape 32x1x128) on one model load per host; each shape is its own XProf session."),
        click.option("--shapes-file", type=click.Path(path_type=Path), default=None, metavar="TOML",
                     help='A sweep from a TOML file: shapes = ["1x1024x1", "32x1x128"].'),
        click.option("--input-len", type=int, default=32, show_default=True, help="Prompt tokens per request."),
        click.option("--output-len", type=int, default=128, show_default=True,
                     help="Generated tokens per request (EOS ignored)."),
        click.option("--batch-size", type=int, default=8, show_default=True, help="Requests per generate call."),
        click.option("--num-iters-warmup", type=int, default=5, show_default=True,
                     help="Untraced generate calls before capture."),
        click.option("--num-iters", type=int, default=1, show_default=True, help="Traced generate calls."),
        click.option("--profile-result-dir", default="profiles", show_default=True, metavar="DIR|URL",
                     help="Where run directories are written: a directory on the machine that runs this command "
                          "(files come through Ray), or a URL (gs://, s3://, file:// on a shared mount; needs "
                          "fsspec and gcsfs / s3fs) that every host writes to directly."),
        click.option("--profiler", type=click.Choice(["auto", "torch", "jax", "xla"]), default="auto", show_default=True,
                     help="Capture backend. jax / xla: a profiler server in each model process, a detached trace of "
                          "--duration-ms after --delay-ms begun at one instant on every host (XProf session). torch: "
                          "vLLM's built-in torch profiler around the profiled iterations. auto: jax with tpu-inference, "
                          "xla with torch_xla, else torch."),
        click.option("--profiler-port", type=int, default=None, metavar="PORT",
                     help="jax/xla: trace the server already running on this port in the model process "
                          "(tpu-inference's JAX_PROFILER_SERVER_PORT) instead of starting one on a free port."),
        click.option("--server-wait-s", type=float, default=30.0, show_default=True,
                     help="jax/xla: longest wait for the profiler server to answer before the host is marked failed."),
        click.option("--phase", type=click.Choice(["all", "prefill", "decode"]), default="all", show_default=True,
                     help="Which part of each iteration to capture. prefill / decode: the tool places the window from "
                          "what it measured during warmup (time window for jax/xla, engine steps for torch) and checks "
                          "the trace holds only that phase; --duration-ms then defaults to the whole phase."),
        click.option("--delay-ms", type=int, envvar="VLLM_TPU_PROFILE_DELAY_MS", default=0, show_default=True,
                     help="Start tracing this long after the profiled iterations begin, e.g. past prefill (server "
                          "backends). 0: the trace opens 5 ms before them (--phase all) [env VLLM_TPU_PROFILE_DELAY_MS]."),
        click.option("--duration-ms", type=int, envvar="VLLM_TPU_PROFILE_DURATION_MS", default=3000, show_default=True,
                     help="Trace length (server backends) [env VLLM_TPU_PROFILE_DURATION_MS]."),
        click.option("--env", "env", multiple=True, callback=_parse_env, metavar="KEY=VALUE",
                     help="Set in every model process through Ray's runtime_env (repeatable), e.g. XLA_HLO_DEBUG=1, "
                          "LIBTPU_INIT_ARGS=...; recorded in the manifest."),
        click.option("--timeout-s", type=float, default=3600.0, show_default=True,
                     help="Longest one host may take for one stage (load, warmup, capture, gather) before it is marked failed."),
        click.option("--json", "json_output", is_flag=True, help="Print JSON on stdout instead of the table."),
        click.argument("engine_flags", nargs=-1, type=click.UNPROCESSED, metavar="[-- VLLM ENGINE FLAGS...]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _given(ctx, name: str) -> bool:
    """Whether the user set a flag (command line or its env var), not its default."""
    from click.core import ParameterSource

    if ctx is None:
        return True
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def config_from(params: dict, ctx=None):
    """RunConfig from the shared flags, validated (ConfigError names the flag)."""
    from ray_tpu_profile.config import Capture, Placement, RunConfig, Workload, parse_shape, read_shapes_file

    workload = Workload(params["input_len"], params["output_len"], params["batch_size"],
                        params["num_iters_warmup"], params["num_iters"])
    shape_texts = list(params["shapes"]) + (read_shapes_file(params["shapes_file"]) if params["shapes_file"] else [])
    return RunConfig(
        workload=workload,
        shapes=tuple(parse_shape(text, workload) for text in shape_texts),
        capture=Capture(profiler=params["profiler"], delay_ms=params["delay_ms"], duration_ms=params["duration_ms"],
                        port=params["profiler_port"], server_wait_s=params["server_wait_s"], phase=params["phase"],
                        duration_given=_given(ctx, "duration_ms")),
        placement=Placement(hosts=params["hosts"], address=params["address"], stage_timeout_s=params["timeout_s"],
                            slice_name=params["slice_name"], env=params["env"]),
        model=params["model"],
        engine_argv=tuple(params["engine_flags"]),
        **_result_location(params["profile_result_dir"]),
    ).validate()


def _result_location(value: str) -> dict:
    from ray_tpu_profile.remote import is_url

    return {"profile_result_url": value.rstrip("/")} if is_url(value) else {"profile_result_dir": Path(value)}


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
    from ray_tpu_profile.progress import Progress
    from ray_tpu_profile.runner import Run

    progress = Progress(quiet=quiet)
    runner = Run(config, ["ray-tpu-profile", *sys.argv[1:]], progress, actor_logs=actor_logs)
    manifest = runner.execute()
    run_dir, url = runner.run_dir, manifest["result_url"]
    code = EXIT_BY_STATUS[manifest["status"]]
    from ray_tpu_profile.report import write_report

    # A stop now (Ctrl-C; SIGTERM from `ray job stop`, made the same) may cut the reports
    # short but never the publishing of a remote run's manifest.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        try:
            write_report(run_dir, timeline_max_events, progress.note)
        except Exception as e:  # the traces and manifest are in place; only what is derived from them is missing
            again = f"on a copy of {url}" if url else str(run_dir)
            click.echo(f"ray-tpu-profile: reports not written ({type(e).__name__}: {e}); "
                       f"`ray-tpu-profile report --write` {again} tries again", err=True)
    finally:
        if url:
            if _publish(runner, url, progress):
                run_dir = url
            else:
                code = EXIT_FAILED
        signal.signal(signal.SIGTERM, previous)
    if params["json_output"]:
        click.echo(json.dumps(manifest, indent=2))
    else:
        from ray_tpu_profile.report import print_summary

        print_summary(manifest, run_dir)
    sys.exit(code)


def _publish(runner, url: str, progress) -> bool:
    """A remote result URL: the driver's files go up beside the hosts'; the temporary local
    copy is removed once they are there, kept (and named) if they could not be."""
    import shutil

    from ray_tpu_profile.remote import publish_run

    try:
        publish_run(runner.run_dir, url)
    except Exception as e:  # the hosts' files are there; the driver's stay here, and the user is told where
        click.echo(f"ray-tpu-profile: could not write the manifest and reports to {url} "
                   f"({type(e).__name__}: {e}); they are in {runner.run_dir}", err=True)
        return False
    shutil.rmtree(runner.local_root)  # Run.local_root: the temporary copy, now uploaded
    progress.note(f"manifest and reports written to {url}")
    return True


@cli.command(epilog="Takes exactly the flags of `run`; use it to check a submission before spending TPU time.")
@run_options
def plan(**params) -> None:
    """Show what `run` would do with these flags: slices, hosts, chips, actors, workload. Loads no model."""
    config = config_from(params, click.get_current_context())
    from ray_tpu_profile.progress import Progress
    from ray_tpu_profile.report import print_plan
    from ray_tpu_profile.runner import Run

    planned = Run(config, ["ray-tpu-profile", *sys.argv[1:]], Progress(quiet=True)).plan()
    if params["json_output"]:
        click.echo(json.dumps(planned, indent=2))
    else:
        print_plan(planned)


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "json_output", is_flag=True, help="Print report.json's content instead of the table.")
@click.option("--write", is_flag=True,
              help="(Re)write report.json, report.txt, timeline.json.gz and report.png in RUN_DIR (`run` writes them itself).")
@TIMELINE_EVENTS_OPTION
def report(run_dir: Path, json_output: bool, write: bool, timeline_max_events: int) -> None:
    """Summarise a run directory: per-host latency statistics, capture skew, the slowest
    host, top operations by self time from each host's trace, failures."""
    from ray_tpu_profile.report import build_report, print_report, write_report

    if not (run_dir / "manifest.json").is_file():
        raise ConfigError("RUN_DIR", str(run_dir), "has no manifest.json (not a ray-tpu-profile run directory)")
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


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--port", type=int, default=None, metavar="PORT", help="HTTP port. Default: a free one.")
def view(run_dir: Path, port: int | None) -> None:
    """Open a run in XProf: starts `xprof --logdir RUN_DIR` on a free port (and a free gRPC
    port, not xprof's fixed 50051), prints the URL, stops on Ctrl-C."""
    import shutil
    import subprocess

    from ray_tpu_profile.profilers.server import free_local_port

    xprof = Path(sys.executable).with_name("xprof")
    xprof = str(xprof) if xprof.exists() else shutil.which("xprof")
    if xprof is None:
        raise ConfigError("view", str(run_dir), "needs XProf, which is not installed here: pip install xprof")
    port = port or free_local_port()
    server = subprocess.Popen([xprof, "--logdir", str(run_dir), "--port", str(port), "--grpc_port", str(free_local_port())])
    click.echo(f"XProf for {run_dir}: http://localhost:{port}/  (Ctrl-C to stop)", err=True)
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
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
