"""Gather through Ray: streamed, verified, bounded memory, and safe against what a host
sends. Real Ray actors on the simulated cluster; real files."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import ray

from ray_tpu_profile.core.files import sha256_file
from ray_tpu_profile.core.records import FileEntry
from ray_tpu_profile.driver.gather import GatherError, gather_host
from ray_tpu_profile.host.actor import HostActor


@contextmanager
def host_actor(cls=HostActor, name="h0"):
    """A real host actor with a fresh output directory, removed with the actor after."""
    actor = ray.remote(cls).options(num_cpus=0).remote(name, f"gather-test-{uuid.uuid4().hex[:8]}")
    out = Path(ray.get(actor.identity.remote())["output_dir"])
    try:
        yield actor, out
    finally:
        ray.kill(actor)
        # The actor's own scratch only: its parent is the node's temp dir, shared by everything.
        shutil.rmtree(out, ignore_errors=True)


class PeakRss:
    """Samples this process's RSS in a thread; .growth_bytes is the peak over the start."""

    def __init__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self.done.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()

    @property
    def growth_bytes(self) -> int:
        return self.peak - self.start


@pytest.mark.slow
def test_file_over_2_gb_streams_verified_with_bounded_driver_memory(sim_cluster, tmp_path):
    with host_actor() as (actor, out):
        big = out / "xplane-like" / "big.bin"
        big.parent.mkdir(parents=True)
        with open(big, "wb") as f:  # sparse: 2.1 GB that takes no disk on the host side
            f.truncate((2 << 30) + (100 << 20))
            f.seek(1 << 30)
            f.write(os.urandom(1 << 20))  # some non-zero data in the middle
        (out / "small.txt").write_text("hello")
        run_dir = tmp_path / "run"
        with PeakRss() as rss:
            files = gather_host(actor, "h0", run_dir, timeout_s=600)
        by_path = {f["path"]: f for f in files}
        gathered = run_dir / "hosts/h0/xplane-like/big.bin"
        assert by_path["hosts/h0/xplane-like/big.bin"]["bytes"] == gathered.stat().st_size == big.stat().st_size
        assert sha256_file(gathered) == by_path["hosts/h0/xplane-like/big.bin"]["sha256"] == sha256_file(big)
        assert (run_dir / "hosts/h0/small.txt").read_text() == "hello"
        assert rss.growth_bytes < 256 << 20, f"driver RSS grew {rss.growth_bytes / 2**20:.0f} MiB for a 2.1 GB file"


def test_symlink_on_the_host_is_refused(sim_cluster, tmp_path):
    with host_actor() as (actor, out):
        (out / "link").symlink_to("/etc/passwd")
        with pytest.raises(ray.exceptions.RayTaskError) as e:
            gather_host(actor, "h0", tmp_path / "run", timeout_s=60)
        assert "host h0: refusing symlink" in str(e.value) and "link" in str(e.value)
        assert not (tmp_path / "run").exists()


def host_sending(bad_path: str):
    """A fake for a fault that cannot be caused for real: this project's HostActor never
    lists such paths, a compromised or buggy host could. Defined in a function so Ray
    ships the class by value (workers cannot import test modules)."""

    class HostSendingBadPaths(HostActor):
        def list_sizes(self):
            return [FileEntry(path=bad_path, bytes=1, sha256="")]

    return HostSendingBadPaths


@pytest.mark.parametrize("bad", ["/etc/cron.d/evil", "../../outside", "torch/../../../outside"])
def test_paths_outside_the_run_directory_are_refused(sim_cluster, tmp_path, bad):
    with host_actor(host_sending(bad)) as (actor, _):
        with pytest.raises(GatherError) as e:
            gather_host(actor, "h0", tmp_path / "run", timeout_s=60)
        assert "host h0" in str(e.value) and repr(bad) in str(e.value)
        assert not list(tmp_path.rglob("outside")) and not (tmp_path / "run").exists()


def test_the_host_hashes_what_it_sends_as_it_reads_it(tmp_path):
    """HostFiles on its own (no actor): chunks read in order are hashed on the way out;
    any other order falls back to hashing the file."""
    from ray_tpu_profile.host.files import HostFiles

    class Files(HostFiles):
        host_name, output_dir = "h0", tmp_path

    data = os.urandom(3000)
    (tmp_path / "f.bin").write_bytes(data)
    files = Files()
    assert [(e.path, e.bytes, e.sha256) for e in files.list_sizes()] == [("f.bin", 3000, "")]
    assert b"".join(files.read_chunk("f.bin", offset, 1024) for offset in (0, 1024, 2048)) == data
    assert files._sending()["f.bin"].bytes == 3000  # hashed while read
    assert files.sent_sha256("f.bin") == sha256_file(tmp_path / "f.bin") and "f.bin" not in files._sending()
    files.read_chunk("f.bin", 0, 1024)
    files.read_chunk("f.bin", 2048, 1024)  # out of order: no running hash kept
    assert "f.bin" not in files._sending() and files.sent_sha256("f.bin") == sha256_file(tmp_path / "f.bin")
