"""Where live vLLM processes say they can be traced (plugin.py: a capture socket), and how
`attach` finds them again.

One entry per process: its host, pid, capture socket, role and deployment name. In a process that
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
import math
import os
import re
import stat
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
class RegistryEntry:
    """One registered process that can be traced.

    Attributes:
        hostname: the host's name as the OS gives it.
        node_id: the Ray node the process runs on (None outside Ray).
        pid, started_ticks: the process, and its start time in clock ticks since boot
            (/proc/<pid>/stat field 22), so a pid reused by another process is not taken
            for it.
        socket: its capture socket (profilers.capture_socket), a Unix socket on its host.
        profiler: "jax" or "xla" (torch_xla's server).
        role, rank: ROLE_*; rank for a worker.
        name: RAY_TPU_PROFILE_ATTACH_NAME of the process (None if unset).
        registered_at_s: epoch seconds.
    """

    hostname: str
    node_id: str | None
    pid: int
    started_ticks: int | None
    socket: str
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
    def from_json(cls, data: Any) -> RegistryEntry:
        """An entry as written; EntryError saying what is wrong with one that is not (a
        registry is shared: one bad entry must not stop attach for everyone, and its role
        and pid become file names and liveness checks)."""
        problem = entry_problem(data)
        if problem:
            raise EntryError(problem)
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


class EntryError(ValueError):
    """A registry entry that is not one this tool wrote (wrong types, values out of range)."""


ROLES = (ROLE_ENGINE_CORE, ROLE_WORKER, ROLE_FRONTEND)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""A deployment name (RAY_TPU_PROFILE_ATTACH_NAME): part of trace file names, so no separators."""
CAPTURE_SOCKET = re.compile(r"^/(?:[^/\x00]+/)*ray-tpu-profile-capture-[A-Za-z0-9_]+/capture\.sock$")
"""A capture socket's path as capture_socket.CaptureListener makes it (absolute, no '..':
a path's parts must not be only dots, checked in entry_problem); whether it is this user's
own is checked before it is asked (capture_socket.socket_problem)."""
HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
"""A host name as the OS gives it (up to a 253-character FQDN): part of a registry file's name."""


def entry_problem(data: Any) -> str | None:
    """What is wrong with a registry entry as read, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"

    def is_int(key: str) -> bool:
        return isinstance(data.get(key), int) and not isinstance(data.get(key), bool)

    if not isinstance(data.get("hostname"), str) or not HOSTNAME.match(data["hostname"]):
        return f"hostname {data.get('hostname')!r}"
    if data.get("node_id") is not None and not isinstance(data["node_id"], str):
        return f"node_id {data['node_id']!r}"
    if not is_int("pid") or data["pid"] <= 1:  # pid 1 is init, never a vLLM process
        return f"pid {data.get('pid')!r}"
    if data.get("started_ticks") is not None and not is_int("started_ticks"):
        return f"started_ticks {data['started_ticks']!r}"
    if not isinstance(data.get("socket"), str) or not CAPTURE_SOCKET.match(data["socket"]):
        return f"socket {data.get('socket')!r}"
    if any(part in (".", "..") for part in data["socket"].split("/")):
        return f"socket {data['socket']!r}"
    if data.get("profiler") not in ("jax", "xla"):
        return f"profiler {data.get('profiler')!r}"
    if data.get("role") not in ROLES:
        return f"role {data.get('role')!r}"
    if data["role"] == ROLE_WORKER and (not is_int("rank") or data["rank"] < 0):
        return f"rank {data.get('rank')!r} of a worker"
    if data["role"] != ROLE_WORKER and data.get("rank") is not None:
        return f"rank {data['rank']!r} of a {data['role']}"
    if data.get("name") is not None and (not isinstance(data["name"], str) or not NAME.match(data["name"])):
        return f"name {data['name']!r}"
    if not isinstance(data.get("registered_at_s"), (int, float)) or not math.isfinite(data["registered_at_s"]):
        return f"registered_at_s {data.get('registered_at_s')!r}"
    return None


def role_of(process_name: str, worker_rank: int | None) -> tuple[str, int | None]:
    """(role, rank) of a process vLLM loaded its plugins in: its workers are found by the
    rank of the worker being initialised, its engine-core process by vLLM's name for it
    (EngineCore, EngineCore_DP<i>); anything else parsed engine flags (ROLE_FRONTEND)."""
    if worker_rank is not None:
        return ROLE_WORKER, worker_rank
    if process_name.startswith("EngineCore"):
        return ROLE_ENGINE_CORE, None
    return ROLE_FRONTEND, None


def matching(entries: list[RegistryEntry], name: str | None) -> list[RegistryEntry]:
    """The entries of deployment `name` (all when None)."""
    return [e for e in entries if name is None or e.name == name]


# Files, /proc and Ray's KV -------------------------------------------------------------


def registry_dir() -> Path:
    from ray_tpu_profile.core.files import cache_root

    return cache_root() / "attach"


class UnsafeRegistry(RuntimeError):
    """The registry directory is not this user's own (owner, or others may write or read)."""


def private_dir(directory: Path) -> Path:
    """directory, created 0700 where missing; UnsafeRegistry where it is another user's or
    others may use it: entries there say which sockets a capture is asked of and where traces go."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = directory.stat()
    if st.st_uid != os.getuid():
        raise UnsafeRegistry(f"{directory} belongs to uid {st.st_uid}, not this user ({os.getuid()})")
    if st.st_mode & 0o077:
        raise UnsafeRegistry(f"{directory} is open to other users (mode {stat.S_IMODE(st.st_mode):o}; 0700 expected)")
    return directory


def process_started_ticks(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot; None when there is no such process
    (or no /proc to ask)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def is_alive(entry: RegistryEntry) -> bool:
    """Whether the entry's process still runs on this host (same pid, same start time). An
    entry without a start time is alive only where there is no /proc to check it by."""
    started = process_started_ticks(entry.pid)
    if entry.started_ticks is None:
        return started is None and not Path("/proc/self/stat").exists() and _pid_exists(entry.pid)
    return started == entry.started_ticks


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_file_entry(entry: RegistryEntry, directory: Path | None = None) -> Path:
    """The entry's file, whole and synced before it is renamed into place, in a 0700
    directory of this user's."""
    directory = private_dir(directory or registry_dir())
    path = directory / f"{entry.hostname}-{entry.pid}.json"
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(entry.to_json()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    return path


def live_file_entries(directory: Path | None = None, problems: list[str] | None = None) -> list[RegistryEntry]:
    """This host's entries whose process runs. Entries of this host's processes that are
    gone are removed; other hosts' (a home shared over NFS) are left to their hosts; an entry
    that cannot be read is skipped and named in problems."""
    import socket

    directory = directory or registry_dir()
    if not directory.is_dir():
        return []
    private_dir(directory)
    here = socket.gethostname()
    entries = []
    for path in sorted(directory.glob("*.json")):
        try:
            entry = RegistryEntry.from_json(json.loads(path.read_text()))
        except (OSError, ValueError) as e:  # EntryError, JSON's: that entry only
            if problems is not None:
                problems.append(f"{path}: {type(e).__name__}: {e}")
            continue
        if entry.hostname != here:
            continue
        if is_alive(entry):
            entries.append(entry)
        else:
            path.unlink(missing_ok=True)
    return entries


def kv_put(entry: RegistryEntry) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(entry.key, json.dumps(entry.to_json()), namespace=KV_NAMESPACE)


def kv_delete(key: str) -> None:
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(key, namespace=KV_NAMESPACE)


def kv_entries(problems: list[str] | None = None) -> list[RegistryEntry]:
    """Every entry in the cluster's KV store, live or not (liveness is checked on its node);
    one that cannot be read is skipped and named in problems."""
    from ray.experimental import internal_kv

    keys = internal_kv._internal_kv_list("", namespace=KV_NAMESPACE)
    entries = []
    for key in keys:
        value = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
        if value is None:
            continue
        try:
            entries.append(RegistryEntry.from_json(json.loads(value)))
        except ValueError as e:
            if problems is not None:
                problems.append(f"KV {key!r}: {type(e).__name__}: {e}")
    return entries
