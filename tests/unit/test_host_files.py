"""A host's scratch directory as its actor removes it (host.files.HostFiles; plain Python,
the actor only adds the process)."""

from __future__ import annotations

from pathlib import Path

from ray_tpu_profile.host.files import HostFiles


class Host(HostFiles):
    def __init__(self, output_dir: Path):
        self.host_name, self.output_dir = "h0", output_dir


def test_a_failed_hosts_scratch_goes_only_when_it_holds_no_file(tmp_path):
    empty = tmp_path / "failed-at-load"
    (empty / "plugins" / "profile").mkdir(parents=True)  # directories, no file: nothing captured
    assert Host(empty).cleanup_if_empty() == []
    assert not empty.exists()

    captured = tmp_path / "failed-after-capture"
    (captured / "plugins" / "profile").mkdir(parents=True)
    (captured / "plugins" / "profile" / "h0.xplane.pb").write_bytes(b"trace")
    assert Host(captured).cleanup_if_empty() == ["plugins/profile/h0.xplane.pb"]
    assert (captured / "plugins" / "profile" / "h0.xplane.pb").read_bytes() == b"trace"  # nowhere else: kept


def test_what_killed_engine_workers_leave_is_named_from_their_reports(tmp_path):
    from ray_tpu_profile.host.actor import worker_leftovers
    from ray_tpu_profile.profilers.capture_socket import CaptureListener

    # As open_capture_socket makes it in a worker; in the temp dir, not tmp_path: pytest's
    # numbered base dirs (pytest-159/...) can take a socket's path past a Unix socket's 107 bytes.
    listener = CaptureListener("jax")
    try:
        reports = [
            {"rank": 0, "socket": str(listener.path), "process_group_file": str(tmp_path / "tmpab12cd34")},
            {"rank": 1, "socket": str(tmp_path / "elsewhere" / "capture.sock"), "process_group_file": None},
            {"rank": 2},  # torch: no capture socket; a TCP rendezvous: no file
        ]
        # The listener's own private directory; a socket it did not make is not removed.
        assert worker_leftovers(reports) == [tmp_path / "tmpab12cd34", listener.directory]
    finally:
        listener.close()
