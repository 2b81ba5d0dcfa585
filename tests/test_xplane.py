"""Verification of xplanes with xprof's own reader: what fails a host."""

import pytest

from ray_tpu_profile.xplane import XplaneError, read_xplane


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
