"""remote.py against real stores: a local directory through fsspec's file://, and moto's
S3 server on loopback standing in for S3 (no network here)."""

from __future__ import annotations

import gc
import hashlib
import os
import secrets

import pytest

from ray_tpu_profile.core import files
from ray_tpu_profile.errors import ConfigError
from ray_tpu_profile.rundir import remote


@pytest.fixture
def s3(s3_server, monkeypatch):
    """An S3 filesystem on the moto server, and fsspec configured to reach it (its config
    dict: the FSSPEC_S3_* env vars users set are read into it when fsspec is imported)."""
    import fsspec.config
    import s3fs

    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_server, "key": "testing", "secret": "testing"})
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, key="testing", secret="testing")
    bucket = f"profiles-{secrets.token_hex(4)}"  # moto's store outlives a test: a bucket each
    fs.mkdir(bucket)
    yield fs, bucket
    s3fs.S3FileSystem.clear_instance_cache()


def _open_files_of(*path_ends: str) -> list[object]:
    """fsspec file objects still in memory (after a collection) for paths ending so."""
    from fsspec.implementations.local import LocalFileOpener
    from fsspec.spec import AbstractBufferedFile

    gc.collect()  # a discarded object-store file that is collected flushes (a new upload)
    kinds = (AbstractBufferedFile, LocalFileOpener)
    # By type(), not isinstance(): that would ask every object for its __class__, and some
    # of torch's deprecated objects warn when asked.
    found = [o for o in gc.get_objects() if issubclass(type(o), kinds)]
    return [o for o in found if str(o.path).endswith(path_ends)]


def test_upload_and_read_back_on_s3_and_file(s3, tmp_path):
    _, bucket = s3
    data = os.urandom(files.CHUNK_BYTES + 12345)  # more than one chunk
    (tmp_path / "f").write_bytes(data)
    want = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    for url in (f"s3://{bucket}/runs/r1/f", f"file://{tmp_path}/out/r1/f"):
        assert remote.upload_file(str(tmp_path / "f"), url) == want
        assert remote.download_file(url, str(tmp_path / "back")) == want
        assert (tmp_path / "back").read_bytes() == data
    assert _open_files_of("runs/r1/f", "out/r1/f") == []  # nothing of an upload stays in memory


def test_a_mistyped_bucket_is_an_error_and_is_not_created(s3):
    fs, bucket = s3
    with pytest.raises(ConfigError) as e:
        remote.check_writable_url("s3://no-such-bucket/runs", "--profile-result-dir")
    assert str(e.value).startswith("--profile-result-dir s3://no-such-bucket/runs: cannot write there")
    assert not fs.exists("no-such-bucket")
    remote.check_writable_url(f"s3://{bucket}/runs", "--profile-result-dir")
    assert fs.ls(bucket, refresh=True) == []  # the probe is gone


class _BrokenRead:
    """A read that fails half way: a fault this test cannot cause in a real file on
    demand, so the local reader is replaced (the store is real)."""

    def __init__(self, path, mode):
        self.file = open(path, mode)
        self.reads = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def read(self, size):
        self.reads += 1
        if self.reads == 2:
            raise OSError("disk went away")
        return self.file.read(size)


def test_an_upload_that_fails_half_way_leaves_nothing(s3, tmp_path, monkeypatch):
    (tmp_path / "f").write_bytes(os.urandom(files.CHUNK_BYTES * 2))
    monkeypatch.setattr(remote, "open", _BrokenRead, raising=False)
    fs, bucket = s3
    for url, exists in (
        (f"s3://{bucket}/runs/r1/f", lambda: fs.exists(f"{bucket}/runs/r1/f")),
        (f"file://{tmp_path}/out/f", lambda: any((tmp_path / "out").iterdir())),
    ):
        with pytest.raises(OSError, match="disk went away"):
            remote.upload_file(str(tmp_path / "f"), url)
        assert not exists()
    assert _open_files_of("runs/r1/f", "out/f") == []
    # S3 keeps (and bills) a multipart upload that was begun and never completed or aborted.
    assert fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) == []


def test_a_read_back_that_fails_leaves_no_file(s3, tmp_path):
    with pytest.raises(FileNotFoundError):
        remote.download_file(f"s3://{s3[1]}/runs/missing", str(tmp_path / "x"))
    assert list(tmp_path.iterdir()) == []
