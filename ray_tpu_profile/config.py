"""Frozen, validated descriptions of one run. Pure: no Ray, vLLM or profiler imports.

Every check raises ConfigError naming the CLI flag and the offending value, so the
CLI can exit 2 before anything is started or loaded. A field that is a CLI flag carries
its flag name, help and default here, once (`flag()`); cli.py builds its options from them.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ray_tpu_profile.errors import ConfigError

PROFILERS = ("auto", "torch", "jax", "xla")
# Python packages each backend imports, and the pip name that brings each.
BACKEND_PACKAGES = {"torch": (), "jax": (("jax", "jax"), ("xprof", "xprof")), "xla": (("torch_xla", "torch_xla"),)}
DEFAULT_SIMULATED_HOSTS = 2
DEFAULT_SIMULATED_CHIPS = 4
PHASES = ("all", "prefill", "decode")
ATTACH_MAX_DURATION_MS = 30_000
"""The longest attach traces a live server without --allow-long-capture: the Python tracer
at level 1 slows serving and its buffer grows for as long as the trace runs."""
ATTACH_MAX_DELAY_MS = 3_600_000
"""An hour: a later start holds every host's actor (and the traced processes' one profiler session) waiting."""


def flag(default: Any, name: str, help: str, **options: Any) -> Any:
    """A dataclass field that is also a CLI flag: its default, flag name, help text and
    click options (metavar, envvar, choices, type, multiple), written once."""
    return field(default=default, metadata={"flag": name, "help": help, **options})


def flag_fields(cls: type) -> dict[str, Any]:
    """The fields of a config dataclass that are CLI flags, by field name."""
    return {f.name: f for f in fields(cls) if "flag" in f.metadata}


REAL_TIME_START_HELP = (
    "jax: the thread that starts a capture sleeps to its instant as a real-time thread (SCHED_FIFO, lowest "
    "priority, for those few ms only), so it starts when the instant comes, not when the scheduler gets to it "
    "among the host's busy threads. Needs CAP_SYS_NICE (root has it); without it, or with "
    "--no-real-time-start, it sleeps as any thread. The manifest says how each host's capture woke."
)


@dataclass(frozen=True)
class Workload:
    """The seed's workload: one batch of dummy prompts generated to completion."""

    input_len: int = flag(32, "--input-len", "Prompt tokens per request.")
    output_len: int = flag(128, "--output-len", "Generated tokens per request (EOS ignored).")
    batch_size: int = flag(8, "--batch-size", "Requests per generate call.")
    num_iters_warmup: int = flag(5, "--num-iters-warmup", "Untraced generate calls per host before capture.")
    num_iters: int = flag(1, "--num-iters", "Traced generate calls per host.")
    seed: int = 0
    """Seed of the dummy token ids; the same on every host so every host does the same work."""

    @property
    def shape(self) -> str:
        return f"{self.batch_size}x{self.input_len}x{self.output_len}"

    def validate(self) -> Workload:
        for flag, value in (
            ("--input-len", self.input_len),
            ("--output-len", self.output_len),
            ("--batch-size", self.batch_size),
            ("--num-iters-warmup", self.num_iters_warmup),
            ("--num-iters", self.num_iters),
        ):
            if value < 1:
                raise ConfigError(flag, value, "must be 1 or more")
        return self

    def check_fits(self, max_model_len: int | None) -> None:
        """input + output tokens must fit the engine's max model length."""
        if max_model_len is not None and self.input_len + self.output_len > max_model_len:
            raise ConfigError(
                "--input-len",
                self.input_len,
                f"--input-len + --output-len = {self.input_len + self.output_len} "
                f"exceeds the max model length {max_model_len}",
            )


@dataclass(frozen=True)
class Capture:
    """What records the trace and over which window."""

    profiler: str = flag(
        "auto",
        "--profiler",
        choices=PROFILERS,
        help="Capture backend. jax / xla: the XLA profiler in each model process (in-process, no port), a "
        "trace of --duration-ms after --delay-ms begun at one instant on every host (XProf session). torch: "
        "vLLM's built-in torch profiler around the profiled iterations. auto: jax with tpu-inference, "
        "xla with torch_xla, else torch.",
    )
    delay_ms: int = flag(
        0,
        "--delay-ms",
        envvar="VLLM_TPU_PROFILE_DELAY_MS",
        help="Start tracing this long after the profiled iterations begin, e.g. past prefill (jax / "
        "xla). 0: the trace opens 5 ms before them (--phase all).",
    )
    duration_ms: int = flag(3000, "--duration-ms", "Trace length (jax / xla).", envvar="VLLM_TPU_PROFILE_DURATION_MS")
    port: int | None = flag(
        None,
        "--profiler-port",
        metavar="PORT",
        type=int,
        help="jax/xla: trace the TSL profiler server the model process already runs on this port "
        "(tpu-inference's JAX_PROFILER_SERVER_PORT) over localhost, instead of in-process. Such a server "
        "listens on every interface: the tool never starts one.",
    )
    server_wait_s: float = flag(
        30.0,
        "--server-wait-s",
        "jax/xla with --profiler-port: longest wait for that server to answer before the host is marked failed.",
    )
    phase: str = flag(
        "all",
        "--phase",
        choices=PHASES,
        help="Which part of each iteration to capture. prefill / decode: the tool places the window from "
        "what it measured during warmup (time window for jax/xla, engine steps for torch) and checks "
        "the trace holds only that phase; --duration-ms then defaults to the whole phase.",
    )
    python_tracer_level: int = flag(
        1,
        "--python-tracer-level",
        type=int,
        help="jax / xla: 1 records every Python call in the model process (vLLM's host side; on CPU the only "
        "events); 0 leaves them out, for long captures on TPU that would outgrow XProf's 2 GiB limit.",
    )
    real_time_start: bool = flag(True, "--real-time-start/--no-real-time-start", REAL_TIME_START_HELP)
    clock_correction: bool = flag(
        True,
        "--clock-correction/--no-clock-correction",
        help="Each host waits for the capture instant on its own clock, shifted by that clock's offset from "
        "the driver's (measured NTP-style before each capture from 48 UDP round trips to a clock echo in "
        "each host's actor, or 8 actor calls where UDP cannot reach it; known to at most half the shortest). "
        "Off: every host waits until its own clock reads "
        "the driver's instant, as if the clocks agreed; offsets are still measured and reported.",
    )
    max_clock_uncertainty_ms: float = flag(
        1.0,
        "--max-clock-uncertainty-ms",
        "Warn about a host whose clock offset is known less precisely than this (or whose kernel says its "
        "clock is unsynchronised): its alignment with the others cannot be trusted below it.",
    )
    duration_given: bool = True
    """Whether --duration-ms was set by the user; with a phase, unset means the whole phase."""

    def validate(self) -> Capture:
        if self.profiler not in PROFILERS:
            raise ConfigError("--profiler", self.profiler, f"must be one of {', '.join(PROFILERS)}")
        if self.delay_ms < 0:
            raise ConfigError("--delay-ms", self.delay_ms, "must be 0 or more")
        if self.duration_ms <= 0:
            raise ConfigError("--duration-ms", self.duration_ms, "must be more than 0")
        if self.port is not None and not 0 < self.port < 65536:
            raise ConfigError("--profiler-port", self.port, "must be a TCP port (1-65535)")
        if not (math.isfinite(self.server_wait_s) and self.server_wait_s > 0):
            raise ConfigError("--server-wait-s", self.server_wait_s, "must be more than 0")
        if self.python_tracer_level not in (0, 1):
            raise ConfigError("--python-tracer-level", self.python_tracer_level, "must be 0 or 1")
        if not (math.isfinite(self.max_clock_uncertainty_ms) and self.max_clock_uncertainty_ms > 0):
            raise ConfigError("--max-clock-uncertainty-ms", self.max_clock_uncertainty_ms, "must be more than 0")
        if self.phase not in PHASES:
            raise ConfigError("--phase", self.phase, f"must be one of {', '.join(PHASES)}")
        if self.phase != "all" and self.delay_ms:
            raise ConfigError(
                "--delay-ms", self.delay_ms, f"--phase {self.phase} places the window itself; leave --delay-ms at 0"
            )
        return self

    @property
    def uses_server(self) -> bool:
        return self.profiler in ("jax", "xla")

    def resolve(self, find_spec=importlib.util.find_spec) -> tuple[Capture, str]:
        """auto -> a backend, by what this Python environment runs vLLM on; then checks that
        the backend's packages are installed. Returns the resolved capture and why."""
        if self.profiler == "auto":
            if find_spec("tpu_inference"):
                profiler, why = "jax", "auto: tpu_inference is installed, vLLM runs the model on JAX"
            elif find_spec("torch_xla"):
                profiler, why = "xla", "auto: torch_xla is installed, vLLM runs the model on torch_xla"
            else:
                profiler, why = "torch", "auto: neither tpu_inference nor torch_xla is installed; vLLM's torch profiler"
        else:
            profiler, why = self.profiler, f"--profiler {self.profiler}"
        missing = [pip for module, pip in BACKEND_PACKAGES[profiler] if find_spec(module) is None]
        if missing:
            raise ConfigError("--profiler", profiler, f"needs {', '.join(missing)}: pip install {' '.join(missing)}")
        return replace(self, profiler=profiler), why


@dataclass(frozen=True)
class Placement:
    """Where the run goes."""

    hosts: int | None = flag(
        None,
        "--hosts",
        "Hosts to profile. Default: every host of the slice (2 simulated hosts locally).",
        metavar="N",
        type=int,
    )
    address: str | None = flag(
        None,
        "--address",
        "Ray cluster to run on. Without it: a local cluster of simulated TPU hosts.",
        envvar="RAY_ADDRESS",
        metavar="ADDR",
    )
    slice_name: str | None = flag(
        None,
        "--slice",
        "TPU slice to profile (ray.io/tpu-slice-name). Default: the only slice in the cluster.",
        metavar="NAME",
    )
    env: tuple[tuple[str, str], ...] = flag(
        (),
        "--env",
        multiple=True,
        metavar="KEY=VALUE",
        help="Set in every model process through Ray's runtime_env (repeatable), e.g. XLA_HLO_DEBUG=1, "
        "LIBTPU_INIT_ARGS=...; recorded in the manifest.",
    )
    stage_timeout_s: float = flag(
        3600.0,
        "--timeout-s",
        "Longest one host may take for one stage (load, warmup, capture, gather) before it is marked failed.",
    )
    chips_per_host: int | None = flag(
        None,
        "--chips-per-host",
        metavar="N",
        type=int,
        help=f"The local simulated cluster only: TPU chips per simulated host (default {DEFAULT_SIMULATED_CHIPS}); "
        "an engine whose TP x PP is larger spans hosts. With --address the hosts' chips are Ray's TPU resources.",
    )

    def validate(self) -> Placement:
        if self.hosts is not None and self.hosts < 1:
            raise ConfigError("--hosts", self.hosts, "must be 1 or more")
        if not (math.isfinite(self.stage_timeout_s) and self.stage_timeout_s > 0):
            raise ConfigError("--timeout-s", self.stage_timeout_s, "must be more than 0")
        if self.chips_per_host is not None:
            if self.address:
                raise ConfigError(
                    "--chips-per-host",
                    self.chips_per_host,
                    f"only for the local simulated cluster; with --address {self.address} each host's "
                    "chips are its TPU resource in Ray",
                )
            if self.chips_per_host not in (1, 2, 4, 8):
                raise ConfigError(
                    "--chips-per-host", self.chips_per_host, "must be 1, 2, 4 or 8 (what Ray accepts as TPU chips)"
                )
        for key, _ in self.env:
            if not key or not (key[0].isalpha() or key[0] == "_") or not all(c.isalnum() or c == "_" for c in key):
                raise ConfigError("--env", key, "not a valid environment variable name")
        return self

    @property
    def simulated_hosts(self) -> int:
        """How many simulated hosts a local cluster gets when there is no address."""
        return self.hosts or DEFAULT_SIMULATED_HOSTS

    @property
    def simulated_chips(self) -> int:
        """TPU chips of each simulated host of a local cluster."""
        return self.chips_per_host or DEFAULT_SIMULATED_CHIPS


@dataclass(frozen=True)
class RunConfig:
    """Everything `run` and `plan` are asked to do, from the flags (RunConfig.from_flags)
    or built directly (tests, bench). validate() checks it as a whole: each part, shapes
    against --phase, the model path, and that the result location is writable.

    Attributes:
        workload: the seed's workload (--input-len ... --num-iters); a sweep's base.
        capture: the backend and its window (--profiler, --delay-ms, --duration-ms, --phase).
        placement: where it runs (--address, --slice, --hosts, --env, --timeout-s).
    """

    workload: Workload = field(default_factory=Workload)
    capture: Capture = field(default_factory=Capture)
    placement: Placement = field(default_factory=Placement)
    model: str | None = flag(
        None,
        "--model",
        "Model path or hub id. Default: a tiny random-weight Llama built locally on first use.",
        metavar="PATH|ID",
    )
    engine_argv: tuple[str, ...] = ()
    """vLLM engine flags given after `--`, parsed by vLLM's own EngineArgs."""
    profile_result_dir: Path = flag(
        Path("profiles"),
        "--profile-result-dir",
        type=str,
        metavar="DIR|URL",
        help="Where run directories are written: a directory on the machine that runs this command "
        "(files come through Ray), or a URL (gs://, s3://, file:// on a shared mount; needs fsspec and "
        "gcsfs / s3fs) that every host writes to directly.",
    )
    profile_result_url: str | None = None
    """--profile-result-dir given as a URL (gs://, s3://, ...): hosts write there directly."""
    shapes: tuple[Workload, ...] = ()
    """--shape / --shapes-file: a sweep, run in turn on one model load; empty: `workload` alone."""

    @classmethod
    def from_flags(cls, flags: dict[str, Any], given: Callable[[str], bool] = lambda name: True) -> RunConfig:
        """The config of `run` / `plan`, validated (ConfigError names the flag). flags are
        keyed by field name, as cli.py declares them, plus `shapes` (BxIxO texts),
        `shapes_file` and `engine_flags`; given(name) says whether the user set a flag."""

        def pick(kind: type) -> Any:
            return kind(**{name: flags[name] for name in flag_fields(kind)})

        workload = pick(Workload)
        texts = list(flags.get("shapes") or ()) + (
            read_shapes_file(flags["shapes_file"]) if flags.get("shapes_file") else []
        )
        result = str(flags["profile_result_dir"])
        from ray_tpu_profile.rundir.remote import is_url

        return cls(
            workload=workload,
            shapes=tuple(parse_shape(text, workload) for text in texts),
            capture=replace(pick(Capture), duration_given=given("duration_ms")),
            placement=pick(Placement),
            model=flags["model"],
            engine_argv=tuple(flags.get("engine_flags") or ()),
            **({"profile_result_url": result.rstrip("/")} if is_url(result) else {"profile_result_dir": Path(result)}),
        ).validate()

    @property
    def workloads(self) -> tuple[Workload, ...]:
        return self.shapes or (self.workload,)

    @property
    def sweep(self) -> bool:
        return len(self.workloads) > 1

    def validate(self) -> RunConfig:
        self.workload.validate()
        self.capture.validate()
        shapes = [w.shape for w in self.workloads]
        if len(set(shapes)) != len(shapes):
            raise ConfigError("--shape", ",".join(shapes), "a shape is given twice")
        for w in self.workloads:
            if self.capture.phase == "decode" and w.output_len < 2:
                flag, value = ("--shape", w.shape) if self.shapes else ("--output-len", w.output_len)
                raise ConfigError(flag, value, "--phase decode needs at least 2 output tokens (no decode step)")
        self.placement.validate()
        check_model_path(self.model)
        if self.profile_result_url:
            from ray_tpu_profile.rundir.remote import check_writable_url

            check_writable_url(self.profile_result_url, "--profile-result-dir")
        else:
            check_writable_dir(self.profile_result_dir, "--profile-result-dir")
        return self


def parse_shape(text: str, base: Workload) -> Workload:
    """`BATCHxINPUTxOUTPUT` (e.g. 32x1x128) with base's iteration counts and seed."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ConfigError("--shape", text, "expected BATCHxINPUTxOUTPUT, e.g. 32x1x128")
    batch, input_len, output_len = map(int, parts)
    if min(batch, input_len, output_len) < 1:
        raise ConfigError("--shape", text, "batch, input and output must be 1 or more")
    return replace(base, batch_size=batch, input_len=input_len, output_len=output_len)


def read_shapes_file(path: Path) -> list[str]:
    """A TOML file with `shapes = ["1x1024x1", "32x1x128"]`."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError("--shapes-file", str(path), f"cannot read it: {e}") from None
    shapes = data.get("shapes")
    if not isinstance(shapes, list) or not shapes or not all(isinstance(s, str) for s in shapes):
        raise ConfigError("--shapes-file", str(path), 'needs shapes = ["BATCHxINPUTxOUTPUT", ...]')
    return shapes


def looks_like_local_path(model: str) -> bool:
    """A hub id is `org/name` (or `name`); anything absolute, dotted or with more parts is a path."""
    if model.startswith(("/", "./", "../", "~")) or model in (".", ".."):
        return True
    return model.count("/") > 1 or os.path.exists(model)


def check_model_path(model: str | None) -> None:
    if model is None:
        return
    if looks_like_local_path(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ConfigError("--model", model, "no such model directory")
        if not (path / "config.json").is_file():
            raise ConfigError("--model", model, "directory has no config.json")


def check_writable_dir(path: Path, flag: str) -> None:
    """The directory, or its nearest existing ancestor, must be a directory we can
    create files in. Probed by creating and removing a temp dir (os.access lies for root)."""
    path = Path(path).expanduser()
    probe_at = path
    while not probe_at.exists():
        if probe_at.parent == probe_at:
            break
        probe_at = probe_at.parent
    if not probe_at.is_dir():
        what = "is a file" if probe_at == path else f"{probe_at} is a file"
        raise ConfigError(flag, str(path), what)
    try:
        tempfile.TemporaryDirectory(dir=probe_at).cleanup()
    except OSError as e:
        raise ConfigError(flag, str(path), f"not writable ({e.strerror})") from None


@dataclass(frozen=True)
class AttachConfig:
    """What `attach` traces, for how long, and where its run directory goes."""

    address: str | None = flag(
        None,
        "--address",
        "A Ray cluster: trace the processes registered on all its nodes. Default: this host's.",
        envvar="RAY_ADDRESS",
        metavar="ADDR",
    )
    name: str | None = flag(
        None, "--name", "Only the deployment started with RAY_TPU_PROFILE_ATTACH_NAME=NAME.", metavar="NAME"
    )
    duration_ms: int = flag(
        2000,
        "--duration-ms",
        f"How long to trace. At most {ATTACH_MAX_DURATION_MS} ms on a live server unless --allow-long-capture.",
        type=int,
        metavar="MS",
    )
    allow_long_capture: bool = flag(
        False,
        "--allow-long-capture",
        f"Allow --duration-ms above {ATTACH_MAX_DURATION_MS}: a long trace with the Python tracer on slows "
        "serving and grows the server's memory for as long as it runs.",
        is_flag=True,
    )
    delay_ms: int = flag(
        0,
        "--delay-ms",
        "Start tracing this long after every host is ready (the instant is the same on every host).",
        type=int,
        metavar="MS",
    )
    profile_result_dir: Path | None = flag(
        None, "--profile-result-dir", "Where the run directory goes (as `run`'s).", type=Path, metavar="DIR"
    )
    server_url: str | None = flag(
        None,
        "--server-url",
        "http://HOST:PORT of the `vllm serve`: the report adds its load around the window, from /metrics.",
        metavar="URL",
    )
    python_tracer_level: int = flag(
        1,
        "--python-tracer-level",
        "1 records every Python call (vLLM's host side); 0 for smaller traces.",
        type=int,
    )
    real_time_start: bool = flag(True, "--real-time-start/--no-real-time-start", REAL_TIME_START_HELP)
    timeout_s: float = flag(
        120.0,
        "--timeout-s",
        "How long a host may take to answer each step (find, warm-up, gather) beyond the window.",
        type=float,
        metavar="S",
    )
    max_clock_uncertainty_ms: float = flag(
        1.0,
        "--max-clock-uncertainty-ms",
        "Warn about a host whose clock offset is known less exactly than this.",
        type=float,
        metavar="MS",
    )

    def validate(self, list_only: bool) -> None:
        if self.python_tracer_level not in (0, 1):
            raise ConfigError("--python-tracer-level", self.python_tracer_level, "must be 0 or 1")
        for name, value in (
            ("--timeout-s", self.timeout_s),
            ("--max-clock-uncertainty-ms", self.max_clock_uncertainty_ms),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(name, value, "must be a positive number")
        if self.duration_ms <= 0:
            raise ConfigError("--duration-ms", self.duration_ms, "must be a positive number of milliseconds")
        if self.duration_ms > ATTACH_MAX_DURATION_MS and not self.allow_long_capture:
            raise ConfigError(
                "--duration-ms",
                self.duration_ms,
                f"is above {ATTACH_MAX_DURATION_MS} ms on a live server (--allow-long-capture to trace longer)",
            )
        if self.delay_ms < 0:
            raise ConfigError("--delay-ms", self.delay_ms, "must be 0 or more milliseconds")
        if self.delay_ms > ATTACH_MAX_DELAY_MS:
            raise ConfigError("--delay-ms", self.delay_ms, f"must be at most {ATTACH_MAX_DELAY_MS} ms")
        # A URL given as a Path reads `gs:/bucket/x`: a scheme of two letters or more, a colon, a slash.
        if self.profile_result_dir is not None and re.match(
            r"^[A-Za-z][A-Za-z0-9+.-]+:/", str(self.profile_result_dir)
        ):
            raise ConfigError(
                "--profile-result-dir", str(self.profile_result_dir), "must be a local directory (attach writes no URL)"
            )
        if not list_only and self.profile_result_dir is None:
            raise ConfigError("--profile-result-dir", "(none)", "is needed to capture (or --list to only list)")
        if (
            self.profile_result_dir is not None
            and self.profile_result_dir.exists()
            and not self.profile_result_dir.is_dir()
        ):
            raise ConfigError("--profile-result-dir", str(self.profile_result_dir), "is a file, not a directory")
        if self.server_url is not None and not self.server_url.startswith(("http://", "https://")):
            raise ConfigError("--server-url", self.server_url, "must be http://HOST:PORT of a `vllm serve`")
