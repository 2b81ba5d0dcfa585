"""Moving a trace into a run directory whole, across filesystems for real (/dev/shm is a
tmpfs here, the tests' temporary directories are on the root disk): issue 25's lost
traces, where attach's scratch and --profile-result-dir were on different filesystems."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

from ray_tpu_profile.core.files import move_file, sha256_file

SHM = Path("/dev/shm")


@pytest.fixture
def other_filesystem(tmp_path):
    if not SHM.is_dir() or os.stat(SHM).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own (a tmpfs), as on this machine kind")
    with tempfile.TemporaryDirectory(dir=SHM) as scratch:
        yield Path(scratch)


def test_a_trace_on_another_filesystem_is_moved_whole_not_lost(other_filesystem, tmp_path):
    source = other_filesystem / "host.xplane.pb"
    source.write_bytes(os.urandom(3 << 20))
    digest = sha256_file(source)
    with pytest.raises(OSError) as rename:  # what the plain rename did, and lost the trace after
        os.rename(source, tmp_path / "probe")
    assert rename.value.errno == errno.EXDEV
    dest = tmp_path / "run" / "host.xplane.pb"
    dest.parent.mkdir()
    move_file(source, dest)
    assert sha256_file(dest) == digest and not source.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["host.xplane.pb"]  # no .part left


def test_a_move_that_cannot_finish_leaves_the_source(other_filesystem, tmp_path):
    source = other_filesystem / "host.xplane.pb"
    source.write_bytes(b"trace")
    with pytest.raises(FileNotFoundError):
        move_file(source, tmp_path / "no-such-dir" / "host.xplane.pb")
    assert source.read_bytes() == b"trace"


def test_on_one_filesystem_it_is_a_rename(tmp_path):
    source, dest = tmp_path / "a", tmp_path / "b"
    source.write_bytes(b"x")
    inode = os.stat(source).st_ino
    move_file(source, dest)
    assert os.stat(dest).st_ino == inode and not source.exists()
