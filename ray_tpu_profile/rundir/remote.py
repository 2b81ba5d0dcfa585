"""A remote `--profile-result-dir` (gs://, s3://, any fsspec URL): hosts write their files
there directly instead of sending them through Ray. fsspec and the protocol's package
(gcsfs, s3fs) are imported only when a URL is given."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

from ray_tpu_profile.core.files import Digest, read_chunks, written_whole
from ray_tpu_profile.errors import ConfigError

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(text: str) -> bool:
    return bool(_URL.match(text))


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for a URL."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs, path.rstrip("/")


def check_writable_url(url: str, flag: str) -> None:
    """Bad input before anything starts: an unknown protocol, its package missing, or a
    location this machine cannot write (probed by writing and removing a small object)."""
    try:
        fs, root = filesystem(url)
    except ImportError as e:  # fsspec's message names the package to install
        raise ConfigError(flag, url, f"{e}".splitlines()[0]) from None
    except ValueError as e:  # "Protocol not known"
        raise ConfigError(flag, url, str(e)) from None
    probe = f"{root}/.ray-tpu-profile-probe-{secrets.token_hex(4)}"
    try:
        if _is_local(fs):  # on an object store makedirs would create a mistyped bucket
            fs.makedirs(root, exist_ok=True)
        fs.pipe_file(probe, b"probe")
        fs.rm_file(probe)
    except Exception as e:  # any backend's auth / permission / network error: named in the message
        raise ConfigError(flag, url, f"cannot write there ({type(e).__name__}: {e})") from None


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def _is_local(fs: Any) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return bool({"file", "local"} & set(protocols))


def upload_file(local_path: str, url: str) -> dict[str, Any]:
    """Stream a local file to url in bounded chunks; sha256 of the bytes sent, and the size
    the store reports afterwards (must match). Written uncommitted and committed only once
    complete (an object store's multipart upload, a local temporary file renamed), and
    discarded on any error, so nobody sees half a file at url."""
    fs, path = filesystem(url)
    if _is_local(fs):  # object stores have no directories (and makedirs would create a missing bucket)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    sent = Digest()
    # _open, the file each filesystem implements, not open(): open() also keeps every
    # uncommitted file in the filesystem's transaction, for a `with fs.transaction` this
    # does not use; the filesystem is cached, so each upload would stay in memory for the
    # process's life (and a shared deque is no place for uploads that may run in threads).
    dst = fs._open(path, "wb", autocommit=False)
    try:
        with open(local_path, "rb") as src:
            for chunk in read_chunks(src):
                dst.write(sent.update(chunk))
        dst.close()
        dst.commit()
    except BaseException:
        _discard(dst)
        raise
    stored = fs.info(path)["size"]
    if stored != sent.bytes:
        raise OSError(f"{url}: stored {stored} bytes, sent {sent.bytes}")
    return sent.as_dict()


def _discard(dst: Any) -> None:
    """Throw away an uncommitted file (an object store's multipart upload aborted, a local
    temporary file removed) and let it go without a last flush: an object-store file left
    open flushes when collected, which begins a new multipart upload that nothing
    completes or aborts (the store keeps it, and bills it)."""
    from fsspec.spec import AbstractBufferedFile

    try:
        dst.discard()
    finally:
        if isinstance(dst, AbstractBufferedFile):
            dst.closed = True  # close() would flush; there is nothing left to write
        else:
            dst.close()


def download_file(url: str, local_path: str) -> dict[str, Any]:
    """Stream url to a local file; its size and sha256 as read back from the store. Written
    beside it and renamed when complete: a failed read leaves nothing."""
    from pathlib import Path

    fs, path = filesystem(url)
    received = Digest()
    with (
        written_whole(Path(local_path), Path(local_path).name + ".part") as part,
        fs.open(path, "rb") as src,
        open(part, "wb") as dst,
    ):
        for chunk in read_chunks(src):
            dst.write(received.update(chunk))
    return received.as_dict()


def publish_run(run_dir, run_url: str, final_manifest: Callable[[], Any] = lambda: None) -> str:
    """After the run: the driver's own files (manifest, latency, reports) go up beside the
    hosts' files, manifest.json last so its presence means the run is complete; just
    before it, final_manifest() writes its last version. The hosts' files (under hosts/
    and plugins/, some read back here to be checked) are already there."""
    from pathlib import Path

    from ray_tpu_profile.rundir.layout import MANIFEST

    run_dir = Path(run_dir)
    # Top-level files only; a dot-name is a temporary left by a write that failed.
    own = sorted(p.name for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    for relpath in [p for p in own if p != MANIFEST]:
        upload_file(str(run_dir / relpath), join(run_url, relpath))
    final_manifest()
    upload_file(str(run_dir / MANIFEST), join(run_url, MANIFEST))
    return run_url
