"""What a host hands back: the files under its output directory, listed with sha256, read
in chunks for the gather or uploaded to a result URL, and removed once verified."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ray_tpu_profile.core.files import Digest, sha256_file
from ray_tpu_profile.core.records import FileEntry


class HostFiles:
    """Mixed into the host actor (host.HostActor), which sets host_name and output_dir.
    Nothing outside output_dir is ever sent."""

    host_name: str
    output_dir: Path

    def list_files(self) -> list[FileEntry]:
        """Every regular file under output_dir with size and sha256."""
        return [
            FileEntry(path=rel, bytes=(self.output_dir / rel).stat().st_size, sha256=sha256_file(self.output_dir / rel))
            for rel in self.list_paths()
        ]

    def list_sizes(self) -> list[FileEntry]:
        """Every regular file under output_dir with its size; the sha256 (empty here) comes
        from sent_sha256 once the file has been read out, so hashing overlaps the transfer
        instead of coming before it."""
        return [
            FileEntry(path=rel, bytes=(self.output_dir / rel).stat().st_size, sha256="") for rel in self.list_paths()
        ]

    def sent_sha256(self, relpath: str) -> str:
        """sha256 of the bytes read_chunk sent of relpath, hashed as they were read; the
        file itself when its chunks were not read in order from its start to its end."""
        digest = self._sending().pop(relpath, None)
        path = self._own_path(relpath)
        if digest is not None and digest.bytes == path.stat().st_size:
            return self._sent(relpath, digest.sha256)
        return self._sent(relpath, sha256_file(path))

    def sha256_of(self, relpath: str) -> str:
        """sha256 of relpath: as it was sent (gathered or uploaded), where the file is
        unchanged since (size and mtime), else hashed now. The summary names its traces'
        sha256 after the gather: a trace of gigabytes need not be hashed a second time."""
        path = self._own_path(relpath)
        stat = path.stat()
        known = self._sent_files().get(str(path))
        if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
            return known[2]
        return sha256_file(path)

    def list_paths(self) -> list[str]:
        """Every regular file under output_dir, relative to it. A symlink is an error:
        following it could send files from outside the output directory."""
        paths = []
        for dirpath, dirnames, filenames in os.walk(self.output_dir):
            dirnames.sort()  # walk in name order: the same listing every time
            for name in sorted(dirnames + filenames):
                path = Path(dirpath) / name
                if path.is_symlink():
                    raise ValueError(f"host {self.host_name}: refusing symlink {path}")
            paths.extend(sorted((Path(dirpath) / name).relative_to(self.output_dir).as_posix() for name in filenames))
        return paths

    def upload(self, relpath: str, url: str) -> dict[str, Any]:
        """Write one file straight to a remote result directory (remote.upload_file)."""
        from ray_tpu_profile.rundir.remote import upload_file

        sent = upload_file(str(self._own_path(relpath)), url)
        self._sent(relpath, str(sent["sha256"]))
        return sent

    def read_chunk(self, relpath: str, offset: int, size: int) -> bytes:
        with open(self._own_path(relpath), "rb") as f:
            f.seek(offset)
            chunk = f.read(size)
        sending = self._sending()
        digest = sending.setdefault(relpath, Digest()) if offset == 0 else sending.get(relpath)
        if digest is not None:
            if digest.bytes == offset:
                digest.update(chunk)
            else:  # not read in order: sent_sha256 hashes the file instead
                del sending[relpath]
        return chunk

    def _sending(self) -> dict[str, Digest]:
        """Running sha256 of each file being read out by read_chunk."""
        if not hasattr(self, "_sending_digests"):
            self._sending_digests: dict[str, Digest] = {}
        return self._sending_digests

    def _sent(self, relpath: str, sha256: str) -> str:
        """Keeps what was sent of relpath with the file's size and mtime as they are now
        (sha256_of); returns sha256."""
        path = self._own_path(relpath)
        stat = path.stat()
        # By the file's own path: attach's actor sends several processes' directories.
        self._sent_files()[str(path)] = (stat.st_size, stat.st_mtime_ns, sha256)
        return sha256

    def _sent_files(self) -> dict[str, tuple[int, int, str]]:
        """Path -> (size, mtime ns, sha256) of each file sent whole."""
        if not hasattr(self, "_sent_sha256s"):
            self._sent_sha256s: dict[str, tuple[int, int, str]] = {}
        return self._sent_sha256s

    def _own_path(self, relpath: str) -> Path:
        path = self.output_dir / relpath
        if not path.resolve().is_relative_to(self.output_dir.resolve()):
            raise ValueError(f"host {self.host_name}: path {relpath!r} is outside its output directory")
        return path

    def cleanup(self) -> None:
        """Drop the host-side copy once the driver has verified the gathered one (the
        host's scratch directory is its own, made for this run: nothing else is in it)."""
        shutil.rmtree(self.output_dir)

    def cleanup_if_empty(self) -> list[str]:
        """A host that failed before its files were gathered: its scratch directory is
        removed only if it holds no file (it failed before it captured anything), so
        nothing of the run is lost. Returns the files that keep it, relative to it."""
        kept = sorted(str(p.relative_to(self.output_dir)) for p in self.output_dir.rglob("*") if not p.is_dir())
        if not kept and self.output_dir.exists():
            shutil.rmtree(self.output_dir)
        return kept
