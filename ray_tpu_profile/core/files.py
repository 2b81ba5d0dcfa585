"""Bytes on disk: streamed sha256, files that appear whole or not at all, trace files
that may be gzipped. Pure apart from file I/O; every copy, upload and check uses these."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

CHUNK_BYTES = 8 << 20
"""One read, transfer or upload step: bounds memory per file whatever its size."""


def read_chunks(f: IO[bytes], chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    while chunk := f.read(chunk_bytes):
        yield chunk


class Digest:
    """sha256 and byte count of a stream, fed chunk by chunk as it passes."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.bytes = 0

    def update(self, chunk: bytes) -> bytes:
        self._hash.update(chunk)
        self.bytes += len(chunk)
        return chunk

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def as_dict(self) -> dict[str, object]:
        return {"bytes": self.bytes, "sha256": self.sha256}


def sha256_file(path: Path) -> str:
    digest = Digest()
    with open(path, "rb") as f:
        for chunk in read_chunks(f):
            digest.update(chunk)
    return digest.sha256


@contextmanager
def written_whole(path: Path, temp_name: str | None = None) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write; renamed over `path` when the block
    ends normally, removed when it raises. Readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(temp_name or f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def move_file(source: Path, dest: Path) -> None:
    """source to dest, whole or not at all: a rename where both are on one filesystem, else
    (EXDEV: a tmpfs scratch, another disk, a FUSE mount) a copy written beside dest, synced
    and renamed into place, and only then is source removed. A failure leaves source."""
    import errno
    import shutil

    try:
        os.replace(source, dest)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    with written_whole(dest, f".{Path(dest).name}.part") as tmp:
        with open(source, "rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK_BYTES)
            out.flush()
            os.fsync(out.fileno())
    os.unlink(source)


def write_text_whole(path: Path, text: str) -> None:
    """text as path's content, whole: written beside it and synced to disk before the
    rename, so a crash after the rename cannot leave an empty manifest in its place."""
    with written_whole(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def open_trace(path: Path) -> IO[bytes]:
    """A trace file for reading, gunzipped if its name ends in .gz."""
    if str(path).endswith(".gz"):
        return cast(IO[bytes], gzip.open(path))
    return open(path, "rb")


def cache_root() -> Path:
    """This tool's cache directory: $XDG_CACHE_HOME (default ~/.cache)/ray-tpu-profile."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ray-tpu-profile"
