"""The run directory: names, safe paths, checksums, manifest. Pure apart from file I/O.

<root>/<run-id>/
  manifest.json   latency.json
  hosts/<host>/<backend files>
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, cast

from ray_tpu_profile.core.files import write_text_whole
from ray_tpu_profile.core.records import HostRecord
from ray_tpu_profile.errors import ConfigError
from ray_tpu_profile.rundir.manifest_types import HostEntry, Manifest

MANIFEST = "manifest.json"
LATENCY = "latency.json"
HOSTS_DIR = "hosts"
STAGING_SUFFIX = ".partial"


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable by time, unique across concurrent runs."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def staging_dir(root: Path, run_id: str) -> Path:
    """Where a run is written until it ends; renamed to `root/run_id` then."""
    return Path(root) / f".{run_id}{STAGING_SUFFIX}"


def safe_relpath(path: str) -> PurePosixPath:
    """A path a host sent, checked so it cannot land outside the run directory."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or "\\" in path or any(part in ("..", "") for part in path.split("/")):
        raise ValueError(f"unsafe path {path!r}")
    return p


XPLANE_PREFIX = "xplane/"
"""Host files under this prefix are a TSL logdir: plugins/profile/<session>/<host>.xplane.pb."""


def host_file_dest(host: str, relpath: str) -> PurePosixPath:
    """Where a host's file goes, relative to the run directory: xplanes into the one
    XProf session of the run (all hosts side by side), everything else under hosts/<host>/."""
    rel = safe_relpath(relpath)
    safe_relpath(host)
    if relpath.startswith(XPLANE_PREFIX):
        inner = PurePosixPath(*rel.parts[1:])
        parts = inner.parts
        if len(parts) != 4 or parts[:2] != ("plugins", "profile") or parts[3] != f"{host}.xplane.pb":
            raise ValueError(f"unexpected xplane path {relpath!r} from host {host!r}")
        return inner
    return PurePosixPath(HOSTS_DIR) / host / rel


def read_manifest(run_dir: Path, argument: str = "RUN_DIR", location: str | None = None) -> Manifest:
    """A run directory's manifest, checked before anything reads a path out of it: a run
    directory may come from a shared bucket, and its manifest names files that `report`
    and `diff` open (and, for a URL, write). ConfigError naming `argument` (exit 2) when it
    is not JSON, not shaped like a manifest, or names a path outside the run directory."""
    where = location or str(run_dir)
    try:
        data = json.loads((Path(run_dir) / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(argument, where, f"{MANIFEST} cannot be read ({type(e).__name__}: {e})") from None
    problem = manifest_problem(data)
    if problem:
        raise ConfigError(argument, where, f"{MANIFEST} is not a ray-tpu-profile manifest: {problem}")
    return data


def manifest_problem(data: Any) -> str | None:
    """What is wrong with a manifest where the readers index it, or None: its hosts, their
    names (a path part each) and files (paths inside the run directory, byte counts)."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for key, kind in (("run_id", str), ("status", str), ("hosts", list), ("workload", dict), ("capture", dict)):
        if not isinstance(data.get(key), kind):
            return f"`{key}` missing or not a {kind.__name__}"
    for host in data["hosts"]:
        if not isinstance(host, dict) or not isinstance(host.get("name"), str):
            return "a host without a name"
        name = host["name"]
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            return f"host name {name!r} is not one path part"
        if not isinstance(host.get("files"), list):
            return f"host {name}: `files` missing or not a list"
        for f in host["files"]:
            if not isinstance(f, dict) or not isinstance(f.get("path"), str) or not isinstance(f.get("bytes"), int):
                return f"host {name}: a file without a path and a byte count"
            try:
                safe_relpath(f["path"])
            except ValueError:
                return f"host {name}: file path {f['path']!r} is outside the run directory"
    return None


def write_json_atomic(path: Path, data: Any) -> None:
    """Readers never see half a file: written beside it, then renamed over it."""
    write_text_whole(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


_SECRET_KEY = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|(^|_)KEY($|_)", re.IGNORECASE)


def redacted_env(env: dict[str, str]) -> dict[str, str]:
    """--env as recorded in the manifest and shown by `plan`: values of names that look like
    credentials (HF_TOKEN, AWS_SECRET_ACCESS_KEY, FSSPEC_S3_KEY, ...) are not written down."""
    return {k: "<redacted>" if _SECRET_KEY.search(k) else v for k, v in env.items()}


_SECRET_FLAG_WORDS = frozenset({"token", "key", "secret", "password", "passwd", "credential", "credentials", "apikey"})
"""A flag one of whose words (split at - and _) is one of these takes a secret: --hf-token,
--api-key, --aws-secret. Not --max-num-batched-tokens or --tokenizer (other words)."""
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<password>[^/@\s]*)@")
REDACTED = "<redacted>"


def redacted_url(text: str) -> str:
    """text with the password of every URL in it replaced (`sftp://me:<redacted>@host/x`)."""
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)


def _secret_flag(arg: str) -> bool:
    if not arg.startswith("-"):
        return False
    words = re.split(r"[-_]+", arg.lstrip("-").split("=", 1)[0].lower())
    return any(word in _SECRET_FLAG_WORDS for word in words)


def redacted_argv(argv: list[str]) -> list[str]:
    """A command line as recorded or shown (the tool's own and the engine's flags): `--env
    NAME=VALUE` redacted as in redacted_env, the value of every flag whose name says it is a
    secret (`--hf-token X`, `--api-key=X`), and the password of every URL."""
    out, after_env, after_secret = [], False, False
    for arg in argv:
        prefix, body = ("--env=", arg[6:]) if arg.startswith("--env=") else ("", arg)
        if (after_env or prefix) and "=" in body:
            name, value = body.split("=", 1)
            body = f"{name}={redacted_env({name: value})[name]}"
        elif after_secret and not arg.startswith("-"):
            body = REDACTED
        elif _secret_flag(arg) and "=" in arg:
            body = f"{arg.split('=', 1)[0]}={REDACTED}"
        out.append(redacted_url(prefix + body))
        after_env = arg == "--env"
        after_secret = _secret_flag(arg) and "=" not in arg
    return out


def build_manifest(
    *,
    run_id: str,
    status: str,
    stage: str,
    error: str | None,
    command: list[str],
    versions: dict[str, str | None],
    workload: dict[str, Any],
    capture: dict[str, Any],
    cluster: dict[str, Any],
    engine: dict[str, Any],
    records: Iterable[HostRecord],
    timings_s: dict[str, float] | None = None,
    timings_by_shape_s: dict[str, dict[str, float]] | None = None,
    engines: list[dict[str, Any]] | None = None,
    result_url: str | None = None,
    outputs: dict[str, str | None] | None = None,
    host_extras: dict[str, dict[str, Any]] | None = None,
) -> Manifest:
    """The public manifest (README "manifest.json"), for `run` and `attach` alike; host_extras:
    fields added to a host's entry by name (attach: the traced process's host, role, server)."""
    extras = host_extras or {}
    manifest = {
        "schema_version": 1,
        "run_id": run_id,
        "status": status,
        "stage": stage,
        "error": error,
        "result_url": result_url,
        "command": command,
        "versions": versions,
        "workload": workload,
        "capture": capture,
        "cluster": cluster,
        "engine": engine,
        "timings_s": timings_s or {},
        "timings_by_shape_s": timings_by_shape_s or {},
        "engines": engines or [],
        "outputs": outputs or {"reports_error": None, "publish_error": None},
        "hosts": [{**host_manifest(r), **extras.get(r.host.name, {})} for r in records],
    }
    return cast(Manifest, manifest)


def host_manifest(r: HostRecord) -> HostEntry:
    entry = {
        "name": r.host.name,
        "node_id": r.host.node_id,
        "node_ip": r.host.node_ip,
        "chips": r.host.chips,
        "slice_name": r.host.slice_name,
        "worker_id": r.host.worker_id,
        "pid": r.pid,
        "engine": r.engine,
        "ranks": list(r.ranks),
        "worker": r.worker.to_json() if r.worker else None,
        "clock": r.clock,
        "summary": r.summary,
        "scratch_dir": r.scratch_dir,
        "scratch_kept": r.scratch_kept,
        "status": r.status,
        "stage": r.stage,
        "error": r.error,
        "files": r.files,
        "capture": r.capture,
        "latency_s": {
            "load": r.load.duration_s if r.load else None,
            "warmup": list(r.warmup.latencies_s) if r.warmup else [],
            "warmup_in_capture": r.warmup.in_capture if r.warmup else 0,
            "profiled": list(r.profiled.latencies_s) if r.profiled else [],
        },
        "phases": {
            name: phase.to_json() if phase else None
            for name, phase in (("load", r.load), ("warmup", r.warmup), ("profiled", r.profiled))
        },
        "shapes": {
            shape: {
                "latency_s": {
                    "warmup": list(done.warmup.latencies_s) if done.warmup else [],
                    "warmup_in_capture": done.warmup.in_capture if done.warmup else 0,
                    "profiled": list(done.profiled.latencies_s) if done.profiled else [],
                },
                "phases": {
                    "warmup": done.warmup.to_json() if done.warmup else None,
                    "traced": done.traced.to_json() if done.traced else None,
                    "profiled": done.profiled.to_json() if done.profiled else None,
                },
                "capture": done.capture,
                "clock": done.clock,
            }
            for shape, done in r.shapes.items()
        },
    }
    return cast(HostEntry, entry)


# Reading a manifest back (reports, timeline, plot) -----------------------------------


def host_iterations(host: HostEntry) -> Iterator[tuple[str, str, int, float, float]]:
    """(shape, "warmup" | "traced" | "profiled", index, wall-clock start s, latency s) of
    every generate call a manifest host entry records ("traced": the warmup iteration a
    --phase decode window was timed in, under a throwaway trace)."""
    for shape, done in host["shapes"].items():
        phases = done["phases"]
        # .get: "traced" came later in schema_version 1; older run directories lack it.
        for kind, phase in (
            ("warmup", phases.get("warmup")),
            ("traced", phases.get("traced")),
            ("profiled", phases.get("profiled")),
        ):
            for i, (start_s, latency_s) in enumerate(
                zip(phase["iteration_starts_s"], phase["latencies_s"]) if phase else ()
            ):
                yield shape, kind, i, start_s, latency_s


def host_label(host: HostEntry) -> str:
    """A host as reports, timeline and plot name it: with its engine and ranks when its
    engine spans hosts (hosts are listed engine by engine, so they group)."""
    if not host.get("worker"):
        return host["name"]
    return f"{host['name']} ({host['engine']}, rank {', '.join(map(str, host['ranks']))})"


def host_captures(host: HostEntry) -> Iterator[tuple[str, dict[str, Any]]]:
    """(shape, capture check) for every shape whose trace said when tracing ran."""
    for shape, done in host["shapes"].items():
        capture = done.get("capture") or {}
        if capture.get("start_ns") is not None and capture.get("stop_ns") is not None:
            yield shape, capture


def skew_text_by_shape(manifest: Manifest) -> dict[str, str]:
    """Each shape's capture start skew as reports say it: on the driver's clock, with its
    clock uncertainty and the figure on the hosts' own clocks (clocks.describe_skew)."""
    from ray_tpu_profile.core.clocks import describe_skew

    shapes = manifest["capture"].get("shapes") or {manifest["workload"]["shape"]: manifest["capture"]}
    return {
        shape: describe_skew(
            info.get("start_skew_ms"), info.get("start_skew_uncertainty_ms"), info.get("start_skew_raw_ms")
        )
        for shape, info in shapes.items()
        if info.get("start_skew_ms") is not None
    }


def clock_warnings(manifest: Manifest) -> dict[str, str]:
    """Host name -> why its clock cannot be trusted, for the hosts that have a warning."""
    return {h["name"]: warning for h in manifest["hosts"] if (warning := host_clock_warning(h))}


def host_clock_warning(host: HostEntry) -> str | None:
    """Why a host's clock cannot be trusted, or None (also where none was measured)."""
    clock = host.get("clock")
    return clock["warning"] if clock else None


def skew_by_shape(manifest: Manifest) -> dict[str, float | None]:
    """Capture start skew of each shape (a sweep's are under capture.shapes; the top-level
    one is the first shape's, the only one outside a sweep)."""
    shapes = manifest["capture"].get("shapes") or {}
    return {shape: info.get("start_skew_ms") for shape, info in shapes.items()} or {
        manifest["workload"]["shape"]: manifest["capture"].get("start_skew_ms")
    }


def build_latency(shapes: list[str], records: Iterable[HostRecord]) -> dict[str, Any]:
    """latency.json: per shape, per host, warmup and profiled iteration latencies in seconds."""
    records = list(records)

    def latencies(r: HostRecord, shape: str, key: str) -> list[float]:
        done = r.shapes.get(shape)
        phase = getattr(done, key) if done else None
        return list(phase.latencies_s) if phase else []

    return {
        "unit": "s",
        "shapes": {
            shape: {r.host.name: {key: latencies(r, shape, key) for key in ("warmup", "profiled")} for r in records}
            for shape in shapes
        },
    }
