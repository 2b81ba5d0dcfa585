"""Pure validation: every bad value names its flag and value."""

from pathlib import Path

import pytest

from ray_tpu_profile.config import Capture, Placement, RunConfig, Workload, check_model_path, check_writable_dir
from ray_tpu_profile.errors import ConfigError


@pytest.mark.parametrize(
    "field,flag",
    [
        ("input_len", "--input-len"),
        ("output_len", "--output-len"),
        ("batch_size", "--batch-size"),
        ("num_iters_warmup", "--num-iters-warmup"),
        ("num_iters", "--num-iters"),
    ],
)
@pytest.mark.parametrize("value", [0, -3])
def test_workload_counts_must_be_positive(field, flag, value):
    with pytest.raises(ConfigError) as e:
        Workload(**{field: value}).validate()
    assert e.value.flag == flag and e.value.value == value
    assert str(e.value).startswith(f"{flag} {value}:")


def test_workload_defaults_are_the_seeds():
    w = Workload().validate()
    assert (w.input_len, w.output_len, w.batch_size, w.num_iters_warmup, w.num_iters) == (32, 128, 8, 5, 1)
    assert w.shape == "8x32x128"


def test_input_plus_output_must_fit_max_model_len():
    Workload(input_len=1000, output_len=1048).check_fits(2048)
    with pytest.raises(ConfigError) as e:
        Workload(input_len=1000, output_len=1049).check_fits(2048)
    assert "2049" in str(e.value) and "2048" in str(e.value)
    Workload(input_len=10**6).check_fits(None)  # unknown limit: vLLM decides


@pytest.mark.parametrize(
    "capture,flag",
    [
        (Capture(delay_ms=-1), "--delay-ms"),
        (Capture(duration_ms=0), "--duration-ms"),
        (Capture(profiler="nope"), "--profiler"),
        (Capture(python_tracer_level=2), "--python-tracer-level"),
        (Capture(max_clock_uncertainty_ms=0), "--max-clock-uncertainty-ms"),
        # issue 25: nan passed `<= 0` checks
        (Capture(max_clock_uncertainty_ms=float("nan")), "--max-clock-uncertainty-ms"),
        (Capture(server_wait_s=float("nan")), "--server-wait-s"),
        (Capture(server_wait_s=float("inf")), "--server-wait-s"),
    ],
)
def test_capture_window(capture, flag):
    with pytest.raises(ConfigError) as e:
        capture.validate()
    assert e.value.flag == flag


def test_placement():
    with pytest.raises(ConfigError) as e:
        Placement(hosts=0).validate()
    assert (e.value.flag, e.value.value) == ("--hosts", 0)
    with pytest.raises(ConfigError):
        Placement(stage_timeout_s=0).validate()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError) as e:
            Placement(stage_timeout_s=bad).validate()
        assert e.value.flag == "--timeout-s"
    assert Placement().simulated_hosts == 2 and Placement(hosts=3).simulated_hosts == 3


def test_model_path(tmp_path):
    check_model_path(None)
    check_model_path("meta-llama/Llama-3.1-70B-Instruct")  # hub id: not checked locally
    with pytest.raises(ConfigError, match="no such model directory"):
        check_model_path(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        check_model_path(str(tmp_path / "empty"))


def test_profile_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file") as e:
        check_writable_dir(f, "--profile-result-dir")
    assert e.value.flag == "--profile-result-dir"
    with pytest.raises(ConfigError, match="is a file"):
        check_writable_dir(f / "below", "--profile-result-dir")


def test_profile_dir_not_writable():
    # Root may write anywhere mode bits say no; /proc refuses new entries even to root.
    with pytest.raises(ConfigError, match="not writable"):
        check_writable_dir(Path("/proc/ray-tpu-profile-test"), "--profile-result-dir")


def test_profile_dir_check_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b"
    check_writable_dir(target, "--profile-result-dir")
    assert list(tmp_path.iterdir()) == []


def test_run_config_validates_all_parts(tmp_path):
    with pytest.raises(ConfigError):
        RunConfig(workload=Workload(batch_size=0), profile_result_dir=tmp_path).validate()
    RunConfig(profile_result_dir=tmp_path).validate()
