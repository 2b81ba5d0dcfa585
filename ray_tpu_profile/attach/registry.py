"""Where live vLLM processes say they run a profiler server (plugin.py), and how
`attach` finds them again.

One entry per process: its host, pid, port, role and deployment name. In a process that
is part of a Ray cluster (ray.is_initialized() there: vLLM's Ray workers) the entry goes to
Ray's KV store, so `attach --address` finds it from anywhere; otherwise to a file in a
directory on the host, `$XDG_CACHE_HOME/ray-tpu-profile/attach/` (default
`~/.cache/ray-tpu-profile/attach/`), read by `attach` on that host (or by its task on that
Ray node). An entry is removed when its process exits normally; one whose process is gone
(killed, or its pid reused by another process) is ignored and pruned by whoever reads it.
Pure apart from the file, /proc and KV functions at the end.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

KV_NAMESPACE = "ray_tpu_profile_attach"
ENABLE_ENV = "RAY_TPU_PROFILE_ATTACH"
NAME_ENV = "RAY_TPU_PROFILE_ATTACH_NAME"

ROLE_ENGINE_CORE = "engine-core"
ROLE_WORKER = "worker"
ROLE_FRONTEND = "frontend"
"""The process that parsed the engine flags: `vllm serve`'s API server, or a Python process
holding an LLM (which runs the engine core in-process when vLLM's multiprocessing is off)."""


@dataclass(frozen=True)
class ServerEntry:
    """One registered profiler server.

    Attributes:
        hostname: the host's name as the OS gives it.
        node_id: the Ray node the process runs on (None outside Ray).
        pid, started_ticks: the process, and its start time in clock ticks since boot
            (/proc/<pid>/stat field 22), so a pid reused by another process is not taken
            for it.
        port: its profiler server, on localhost.
        profiler: "jax" or "xla" (torch_xla's server).
        role, rank: ROLE_*; rank for a worker.
        name: RAY_TPU_PROFILE_ATTACH_NAME of the process (None if unset).
        registered_at_s: epoch seconds.
    """

    hostname: str
    node_id: str | None
    pid: int
    started_ticks: int | None
    port: int
    profiler: str
    role: str
    rank: int | None
    name: str | None
    registered_at_s: float

    @property
    def key(self) -> str:
        return f"{self.node_id or self.hostname}/{self.pid}"

    @property
    def label(self) -> str:
        """Its part of a trace's host name: role, rank and pid."""
        role = f"{self.role}{self.rank}" if self.rank is not None else self.role
        return f"{role}-pid{self.pid}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerEntry:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


def role_of(process_name: str, worker_rank: int | None) -> tuple[str, int | None]:
    """(role, rank) of a process vLLM loaded its plugins in: its workers are found by the
    rank of the worker being initialised, its engine-core process by vLLM's name for it
    (EngineCore, EngineCore_DP<i>); anything else parsed engine flags (ROLE_FRONTEND)."""
    if worker_rank is not None:
        return ROLE_WORKER, worker_rank
    if process_name.startswith("EngineCore"):
        return ROLE_ENGINE_CORE, None
    return ROLE_FRONTEND, None


def matching(entries: list[ServerEntry], name: str | None) -> list[ServerEntry]:
    """The entries of deployment `name` (all when None)."""
    return [e for e in entries if name is None or e.name == name]


# Files, /proc and Ray's KV -------------------------------------------------------------


def registry_dir() -> Path:
    from ray_tpu_profile.core.files import cache_root

    return cache_root() / "attach"


def process_started_ticks(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot; None when there is no such process
    (or no /proc to ask)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def is_alive(entry: ServerEntry) -> bool:
    """Whether the entry's process still runs on this host (same pid, same start time)."""
    started = process_started_ticks(entry.pid)
    return started is not None and (entry.started_ticks is None or started == entry.started_ticks)


def write_file_entry(entry: ServerEntry, directory: Path | None = None) -> Path:
    directory = directory or registry_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{entry.hostname}-{entry.pid}.json"
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(entry.to_json()))
    os.replace(temp, path)
    return path


def live_file_entries(directory: Path | None = None) -> list[ServerEntry]:
    """This host's entries whose process runs; entries of processes gone are removed."""
    directory = directory or registry_dir()
    entries = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        entry = ServerEntry.from_json(json.loads(path.read_text()))
        if is_alive(entry):
            entries.append(entry)
        else:
            path.unlink(missing_ok=True)
    return entries


def kv_put(entry: ServerEntry) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(entry.key, json.dumps(entry.to_json()), namespace=KV_NAMESPACE)


def kv_delete(key: str) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(key, namespace=KV_NAMESPACE)


def kv_entries() -> list[ServerEntry]:
    """Every entry in the cluster's KV store, live or not (liveness is checked on its node)."""
    from ray.experimental import internal_kv

    keys = internal_kv._internal_kv_list("", namespace=KV_NAMESPACE)
    values = [internal_kv._internal_kv_get(k, namespace=KV_NAMESPACE) for k in keys]
    return [ServerEntry.from_json(json.loads(v)) for v in values if v is not None]
