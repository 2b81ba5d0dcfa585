"""Bring a host's files to the driver through Ray, in bounded chunks, verifying sha256.

Memory on either side stays at about window x chunk bytes per host, whatever the file size.
Hashing overlaps the transfer on both sides: the host hashes each chunk as it reads it out
(not the whole file before the first chunk leaves), the driver each chunk as it arrives
while the next ones are in flight; the two hashes are compared once the file is in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from ray_tpu_profile.core.files import CHUNK_BYTES, Digest, written_whole
from ray_tpu_profile.errors import ToolError
from ray_tpu_profile.rundir.layout import host_file_dest

WINDOW_CHUNKS = 4
"""Chunk reads in flight per host: enough to keep the pipe busy, few enough to bound memory."""
GATHER_HOSTS_AT_ONCE = 16
"""Hosts gathered side by side (the others wait their turn): with WINDOW_CHUNKS chunks of
CHUNK_BYTES each, the driver's memory in flight is bounded however many hosts a run has."""


class GatherError(ToolError, RuntimeError):
    pass


def _destination(host_name: str, relpath: str):
    """Where a host's file goes in the run directory; GatherError (naming the host) for a
    path that would land outside it."""
    try:
        return host_file_dest(host_name, relpath)
    except ValueError as e:
        raise GatherError(f"host {host_name}: {e}") from None


def gather_host(
    actor: Any,
    host_name: str,
    run_dir: Path,
    timeout_s: float,
    check_stop: Callable[[], None] = lambda: None,
    gathered: list[dict[str, Any]] | None = None,
    only: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """Copy every file the host lists (or only those of its paths in `only`) into the run
    directory; returns the manifest entries. Each entry is appended to `gathered` as soon
    as its file is verified, so if the host dies half way the files it already delivered
    stay listed (the one in transit is removed). check_stop is called between chunks and
    may raise to abandon the gather."""
    import ray

    gathered = [] if gathered is None else gathered
    entries = ray.get(actor.list_sizes.remote(), timeout=timeout_s)
    for entry in entries:
        if only is not None and entry.path not in only:
            continue
        dest_rel = _destination(host_name, entry.path)
        dest = run_dir / dest_rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = Digest()
        pending: deque = deque()
        # Half a file is no trace: the part file goes unless the whole file arrived intact.
        with written_whole(dest, dest.name + ".part") as part, open(part, "wb") as out:
            offsets = iter(range(0, entry.bytes, CHUNK_BYTES))
            while True:
                while len(pending) < WINDOW_CHUNKS and (offset := next(offsets, None)) is not None:
                    pending.append(actor.read_chunk.remote(entry.path, offset, CHUNK_BYTES))
                if not pending:
                    break
                check_stop()
                out.write(digest.update(ray.get(pending.popleft(), timeout=timeout_s)))
            # The host hashed what it sent as it read it: its hash is ready once the last chunk is.
            sent_sha256 = ray.get(actor.sent_sha256.remote(entry.path), timeout=timeout_s)
            if digest.bytes != entry.bytes or digest.sha256 != sent_sha256:
                raise GatherError(
                    f"host {host_name}: {entry.path} arrived as {digest.bytes} bytes sha256 {digest.sha256[:12]}, "
                    f"host sent {entry.bytes} bytes sha256 {sent_sha256[:12]}"
                )
        gathered.append({"path": dest_rel.as_posix(), "bytes": entry.bytes, "sha256": sent_sha256})
    return gathered


def upload_host(
    actor: Any,
    host_name: str,
    run_url: str,
    run_dir: Path,
    timeout_s: float,
    check_stop: Callable[[], None] = lambda: None,
    gathered: list[dict[str, Any]] | None = None,
    only: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """The remote counterpart of gather_host: the host writes each file straight to
    run_url (sha256 of the bytes it sent, size as the store reports it). The driver then
    reads back the traces and summary it needs into run_dir and checks them against the host's sha256,
    so those are verified end to end; other files (dumps) are checked by size. Entries are
    appended to `gathered` as each file is done, as in gather_host."""
    import ray

    from ray_tpu_profile.analysis.host_summary import SUMMARY
    from ray_tpu_profile.analysis.traces import TRACE_SUFFIXES
    from ray_tpu_profile.driver.barrier import result_watching_stop
    from ray_tpu_profile.rundir.remote import download_file, join

    gathered = [] if gathered is None else gathered
    for relpath in ray.get(actor.list_paths.remote(), timeout=timeout_s):
        if only is not None and relpath not in only:
            continue
        dest_rel = _destination(host_name, relpath).as_posix()
        check_stop()
        sent = result_watching_stop(
            actor.upload.remote(relpath, join(run_url, dest_rel)).future(), timeout_s, check_stop
        )
        entry = {"path": dest_rel, "bytes": sent["bytes"], "sha256": sent["sha256"], "verified": "size"}
        if dest_rel.endswith((*TRACE_SUFFIXES, f"/{SUMMARY}")):  # what the reports read
            local = run_dir / dest_rel
            local.parent.mkdir(parents=True, exist_ok=True)
            got = download_file(join(run_url, dest_rel), str(local))
            if got != sent:
                local.unlink()
                raise GatherError(
                    f"host {host_name}: {dest_rel} reads back from {run_url} as {got['bytes']} bytes "
                    f"sha256 {got['sha256'][:12]}, host sent {sent['bytes']} bytes sha256 {sent['sha256'][:12]}"
                )
            entry["verified"] = "sha256"
        gathered.append(entry)
    return gathered
