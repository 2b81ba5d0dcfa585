"""`diff` on manifests built here (the verdict rule, matching, categories, the across-hosts
summary) and its bad input through the real CLI. The real-run diffs are in test_run_e2e.py."""

from __future__ import annotations

import json

import pytest

from ray_tpu_profile.analysis.diff import Run, diff_hosts, diff_latency, diff_ops_of_host
from support.cli import run_cli


def manifest(latencies: dict[str, tuple[list[float], list[float]]], shape: str = "4x16x8", profiler: str = "jax"):
    """hosts -> (warmup, profiled) latencies, as a run's manifest has them."""
    return {
        "run_id": "r",
        "status": "ok",
        "workload": {"shape": shape, "shapes": [shape]},
        "capture": {"profiler": profiler, "start_skew_ms": 0.2},
        "engines": [],
        "hosts": [
            {
                "name": name,
                "engine": f"engine{i}",
                "worker": None,
                "status": "ok",
                "files": [],
                "latency_s": {"warmup": w, "profiled": p},
                "shapes": {shape: {"latency_s": {"warmup": w, "profiled": p}}},
            }
            for i, (name, (w, p)) in enumerate(latencies.items())
        ],
    }


NOISY = ([0.5, 0.101, 0.098, 0.103, 0.1], [0.099, 0.102])


def test_a_run_against_itself_is_within_noise_and_8x_is_slower():
    same, _ = diff_latency(manifest({"h0": NOISY, "h1": NOISY}), manifest({"h0": NOISY, "h1": NOISY}))
    assert [r["verdict"] for r in same] == ["within noise", "within noise"]
    assert same[0]["ratio"] == 1.0 and same[0]["a_n"] == 6  # the first warmup iteration left out
    eight = ([4 * x for x in NOISY[0]], [8 * x for x in NOISY[1]])
    slower, _ = diff_latency(manifest({"h0": NOISY}), manifest({"h0": eight}))
    assert slower[0]["verdict"] == "slower" and slower[0]["interval"][0] > 1
    faster, _ = diff_latency(manifest({"h0": eight}), manifest({"h0": NOISY}))
    assert faster[0]["verdict"] == "faster" and faster[0]["interval"][1] < 1


def test_three_iterations_a_side_are_too_few_and_say_how_many_would_do():
    few = ([0.5, 0.1, 0.104], [0.098])  # 3 warmups (two kept) + 1 profiled: 3 samples
    double = ([0.5, 0.2, 0.21], [0.195])
    rows, _ = diff_latency(manifest({"h0": few}), manifest({"h0": double}))
    (row,) = rows
    assert row["verdict"] == "too few samples" and row["interval"] is None and row["ratio"] > 1.9
    assert row["need_n"] >= 5
    assert row["note"] == f"3 and 3 iterations; --num-iters {row['need_n'] - 2} or more decides a 10% change here"


def test_within_noise_says_what_it_could_have_seen():
    same, _ = diff_latency(manifest({"h0": NOISY}), manifest({"h0": NOISY}))
    (row,) = same
    assert row["verdict"] == "within noise" and 1 < row["smallest_slower_ratio"] < 1.1
    assert row["a_spread"] == row["b_spread"] and 0 < row["a_spread"] < 0.05
    assert row["note"].startswith(f"could call {row['smallest_slower_ratio']:.2f}x or more slower; --num-iters")


def sweep(latencies, shapes):
    m = manifest(latencies, shape=shapes[0])
    m["workload"]["shapes"] = shapes
    for host in m["hosts"]:
        host["shapes"] = {s: host["shapes"][shapes[0]] for s in shapes}
    return m


def test_hosts_and_shapes_in_one_run_only_are_listed():
    a = sweep({"h0": NOISY, "h1": NOISY}, ["4x16x8", "1x16x8"])
    b = sweep({"h0": NOISY, "h2": NOISY}, ["4x16x8", "8x16x8"])
    rows, only = diff_latency(a, b)
    assert [(r["host"], r["shape"]) for r in rows] == [("h0", "4x16x8")]
    assert only == {
        "hosts_only_in_a": ["h1"],
        "hosts_only_in_b": ["h2"],
        "shapes_only_in_a": ["1x16x8"],
        "shapes_only_in_b": ["8x16x8"],
    }


def test_runs_of_one_shape_each_are_compared_whatever_the_shapes():
    rows, only = diff_latency(manifest({"h0": NOISY}), manifest({"h0": NOISY}, shape="32x16x8"))
    assert [r["shape"] for r in rows] == ["4x16x8 -> 32x16x8"] and not any(only.values())


def test_one_host_that_regressed_alone_is_named():
    slow = ([x * 1.5 for x in NOISY[0]], [x * 1.5 for x in NOISY[1]])
    a, b = manifest({"h0": NOISY, "h1": NOISY, "h2": NOISY}), manifest({"h0": NOISY, "h1": slow, "h2": NOISY})
    rows, _ = diff_latency(a, b)
    hosts = diff_hosts(a, b, rows)
    assert hosts["slower_hosts"] == ["h1"] and hosts["only_some_regressed"]
    assert hosts["summary"].startswith("h1 (1.50x) regressed while 2 other host(s) did not: h0, h2")
    assert hosts["b"]["slowest_host"] == "h1" and hosts["a"]["capture_start_skew_ms"] == 0.2


def test_operation_categories_and_shares():
    a = {"matmul": 10.0, "attn": 4.0, "copy": 1.0, "gone": 0.5}
    b = {"matmul": 20.0, "attn": 4.1, "copy": 0.5, "new": 2.0}
    ops = diff_ops_of_host(a, b)
    assert ops["categories"] == {
        "added": ["new"],
        "removed": ["gone"],
        "increased": ["matmul"],
        "decreased": ["copy"],
        "unchanged": ["attn"],
    }
    assert [e["name"] for e in ops["top_increases"]] == ["matmul", "new", "attn"]
    assert ops["top_increases"][0]["share"] == pytest.approx(10 / 12.1)
    assert [(e["name"], e["delta_ms"]) for e in ops["top_decreases"]] == [("copy", -0.5), ("gone", -0.5)]


def test_different_profilers_compare_latency_only(tmp_path):
    from ray_tpu_profile.analysis.diff import diff_runs

    a = Run("A", "a", tmp_path, manifest({"h0": NOISY}, profiler="torch"))
    b = Run("B", "b", tmp_path, manifest({"h0": NOISY}, profiler="jax"))
    result = diff_runs(a, b)
    assert (
        result["ops"]["compared"] is False and "torch" in result["ops"]["reason"] and "jax" in result["ops"]["reason"]
    )
    assert result["latency"][0]["verdict"] == "within noise"


def write_run(root, name, m):
    run = root / name
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(m))
    return run


@pytest.mark.parametrize(
    "args, message",
    [
        (["{missing}", "{a}"], "RUN_A {missing}: is not a directory"),
        (["{a}", "{empty}"], "RUN_B {empty}: has no manifest.json (not a ray-tpu-profile run directory)"),
        (["{a}", "{a}", "--fail-above", "ten"], "Invalid value for '--fail-above': 'ten' is not a valid float."),
        (["{a}", "{a}", "--fail-above", "-5"], "--fail-above -5.0: must be a percentage, 0 or more"),
        (["{a}", "{a}", "--fail-above", "nan"], "--fail-above nan: must be a percentage, 0 or more"),
        (["{a}", "{a}", "--allow-few-samples"], "--allow-few-samples true: only applies with --fail-above"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    paths = {
        "a": write_run(tmp_path, "a", manifest({"h0": NOISY})),
        "missing": tmp_path / "nope",
        "empty": tmp_path / "empty",
    }
    paths["empty"].mkdir()
    proc = run_cli("diff", *(a.format(**paths) for a in args))
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line == f"ray-tpu-profile: error: {message.format(**paths)}"


def test_exit_codes_and_outputs_of_a_gate(tmp_path):
    slow = ([x * 2 for x in NOISY[0]], [x * 2 for x in NOISY[1]])
    a, b = write_run(tmp_path, "a", manifest({"h0": NOISY})), write_run(tmp_path, "b", manifest({"h0": slow}))
    same = run_cli("diff", str(a), str(a), "--fail-above", "10", "--json")
    assert same.returncode == 0 and json.loads(same.stdout)["latency"][0]["verdict"] == "within noise"
    gate = run_cli("diff", str(a), str(b), "--fail-above", "10", "--write", str(tmp_path / "out"))
    assert gate.returncode == 1 and "h0 4x16x8 +100.0%" in gate.stderr and "slower" in gate.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["diff.json", "diff.png", "diff.txt"]
    assert run_cli("diff", str(a), str(b), "--fail-above", "150").returncode == 0  # slower, but by less


def test_a_gate_fails_where_the_samples_could_not_have_seen_its_threshold(tmp_path):
    few = ([0.5, 0.1, 0.104], [0.098])
    a, b = write_run(tmp_path, "a", manifest({"h0": few})), write_run(tmp_path, "b", manifest({"h0": few}))
    blind = run_cli("diff", str(a), str(b), "--fail-above", "10")
    assert blind.returncode == 1, blind.stderr
    assert "could not have seen a 10% regression" in blind.stderr and "too few samples" in blind.stderr
    assert run_cli("diff", str(a), str(b), "--fail-above", "10", "--allow-few-samples").returncode == 0
    # Enough samples, but a 1% gate on noise of about 2%: within noise cannot mean "no 1% regression".
    noisy = write_run(tmp_path, "noisy", manifest({"h0": NOISY}))
    tight = run_cli("diff", str(noisy), str(noisy), "--fail-above", "1")
    assert tight.returncode == 1 and "h0 4x16x8 within noise: could call" in tight.stderr


def test_a_result_url_is_read_down_and_compared(tmp_path):
    """A run published to a result URL (file:// here: the same fsspec path as gs:// or s3://)."""
    local = write_run(tmp_path, "a", manifest({"h0": NOISY}))
    proc = run_cli("diff", str(local), local.resolve().as_uri(), "--json")
    assert proc.returncode == 0, proc.stderr
    diff = json.loads(proc.stdout)
    assert diff["b"]["location"] == local.resolve().as_uri() and diff["latency"][0]["verdict"] == "within noise"
    missing = run_cli("diff", str(local), (tmp_path / "nothing").as_uri())
    assert missing.returncode == 2 and "RUN_B file://" in missing.stderr and "has no manifest.json" in missing.stderr


def test_a_result_url_whose_manifest_names_paths_outside_its_run_is_refused_before_anything_is_written(tmp_path):
    """Issue 25: paths of a remote manifest were joined unchecked, so whoever can write to a
    shared bucket could make `diff` write a trace-named file anywhere on the reader's machine
    (here an absolute path under tmp_path, whose source the bucket holds)."""
    target = tmp_path / "owned.pt.trace.json.gz"
    m = manifest({"h0": NOISY})
    m["hosts"][0]["files"] = [{"path": str(target), "bytes": 5, "sha256": "-"}]
    remote = write_run(tmp_path, "remote", m)
    planted = remote / str(target).lstrip("/")  # what join(URL, path) reads for that path
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"owned")
    local = write_run(tmp_path, "a", manifest({"h0": NOISY}))
    proc = run_cli("diff", str(local), remote.resolve().as_uri())
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "is outside the run directory" in line and line.startswith("ray-tpu-profile: error: RUN_B file://")
    assert not target.exists()
    escaping = manifest({"h0": NOISY})
    escaping["hosts"][0]["files"] = [{"path": "hosts/h0/../../../x.pt.trace.json.gz", "bytes": 1, "sha256": "-"}]
    bad = run_cli("diff", str(local), str(write_run(tmp_path, "escaping", escaping)))
    assert bad.returncode == 2 and "outside the run directory" in bad.stderr


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "manifest.json cannot be read"),
        ("[]", "not a JSON object"),
        ('{"run_id": "r", "status": "ok", "workload": {}, "capture": {}}', "`hosts` missing"),
    ],
)
def test_a_malformed_manifest_is_one_line_and_exit_2_for_report_and_diff(tmp_path, content, problem):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(content)
    for argv in (["report", str(run)], ["diff", str(run), str(run)]):
        proc = run_cli(*argv)
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("ray-tpu-profile: error: RUN_") and problem in line, line
