"""Verification of xplanes with xprof's own reader: what fails a host."""

import pytest

from ray_tpu_profile.analysis.xplane import XplaneError, read_xplane


def test_missing_file(tmp_path):
    with pytest.raises(XplaneError, match="no such file"):
        read_xplane(tmp_path / "h.xplane.pb")


def test_zero_byte_file(tmp_path):
    (tmp_path / "h.xplane.pb").write_bytes(b"")
    with pytest.raises(XplaneError, match="0 bytes"):
        read_xplane(tmp_path / "h.xplane.pb")


def test_garbage_is_not_an_xplane(tmp_path):
    path = tmp_path / "h.xplane.pb"
    path.write_bytes(b"\xff\xfe this is not a serialized XSpace \x00" * 10)
    with pytest.raises(XplaneError):
        read_xplane(path)


def test_an_xplane_over_xprofs_2_gib_limit_or_empty_says_so_and_what_to_do(tmp_path):
    """A capture that outgrows XProf's 2 GiB protobuf limit is not something this machine
    can record in a test's time: the files here have the sizes such captures leave (a
    sparse 2 GiB file, an empty one); the reader and its message are the real ones."""
    from ray_tpu_profile.analysis.xplane import XPROF_LIMIT_BYTES, XplaneError, read_xplane

    huge, empty = tmp_path / "w0.xplane.pb", tmp_path / "w1.xplane.pb"
    with open(huge, "wb") as f:
        f.truncate(XPROF_LIMIT_BYTES)
    empty.write_bytes(b"")
    with pytest.raises(XplaneError, match=r"w0.xplane.pb: 2,147,483,648 bytes, over XProf's 2 GiB protobuf limit"):
        read_xplane(huge)
    with pytest.raises(XplaneError, match=r"w1.xplane.pb: 0 bytes\. .*outgrew XProf's 2 GiB protobuf limit") as e:
        read_xplane(empty)
    assert "a shorter --duration-ms, or --python-tracer-level 0" in str(e.value)


@pytest.mark.parametrize(
    "stats, problem",
    [
        ({"profile_start_time": 10}, "unreadable capture times"),  # no stop time
        ({"profile_start_time": "soon", "profile_stop_time": 20}, "unreadable capture times"),
        ({"profile_start_time": 10, "profile_stop_time": 20, "process_id": "me"}, "unreadable process_id"),
    ],
)
def test_a_crafted_xplane_is_an_xplane_error_not_a_traceback(tmp_path, stats, problem):
    """Issue 25: well-formed protobuf with fields of the wrong kind, as verify reads it."""
    from ray_tpu_profile.analysis.xspace import EventSpec, LineSpec, PlaneSpec, write_xspace

    path = tmp_path / "h.xplane.pb"
    line = LineSpec("python", timestamp_ns=0, events=[EventSpec("f", 0, 1000)])
    write_xspace(path, [PlaneSpec("/host:CPU", [line], stats=stats)])
    with pytest.raises(XplaneError, match=problem):
        read_xplane(path)
