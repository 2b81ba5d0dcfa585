"""Each host's summary of its own traces (analysis/host_summary.py, host/summaries.py): made
from a host's output directory as a host makes it before the gather, shipped into the run
directory like its other files, and merged by the reports without reading a trace event;
the same report as from the traces themselves. On the real jax run of tests/data with TPU
device planes added (test_real_runs.py), so devices, collectives and the straggler are in it."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from ray_tpu_profile.analysis import host_summary
from ray_tpu_profile.analysis.report import build_report, write_report
from ray_tpu_profile.analysis.timeline import placements, timeline_origin_ns, write_timeline
from ray_tpu_profile.core.files import sha256_file
from ray_tpu_profile.host.files import HostFiles
from ray_tpu_profile.host.summaries import HostSummaries
from ray_tpu_profile.rundir.layout import XPLANE_PREFIX, read_manifest, write_json_atomic
from support.cli import REPO

JAX = REPO / "tests" / "data" / "jax-2hosts"


class Host(HostFiles, HostSummaries):
    """The host actor's own file and summary methods over an output directory (no Ray:
    the methods are plain Python; the actor only adds the process)."""

    def __init__(self, host_name: str, output_dir: Path):
        self.host_name, self.output_dir = host_name, output_dir


def run_with_device_planes(tmp_path: Path) -> Path:
    """The real jax run, each xplane with two TPU chips' planes appended (local-sim-w1's
    chip 1 computes 3 ms longer), its manifest's sha256 updated as a gather records them."""
    from ray_tpu_profile.analysis.xspace import build_xspace
    from support.tpu_traces import Slow, tpu_planes

    run_dir = Path(shutil.copytree(JAX, tmp_path / "run"))
    manifest = read_manifest(run_dir)
    for i, host in enumerate(manifest["hosts"]):
        for f in host["files"]:
            if f["path"].endswith(".xplane.pb"):
                planes = tpu_planes(
                    i, 2, 3, Slow("local-sim-w1", 1, 3.0), host["name"], 0, origin_ns=host["capture"]["start_ns"]
                )
                with open(run_dir / f["path"], "ab") as out:
                    out.write(build_xspace([p for p in planes if p.name.startswith("/device:")]).SerializeToString())
                f["bytes"], f["sha256"] = (run_dir / f["path"]).stat().st_size, sha256_file(run_dir / f["path"])
    write_json_atomic(run_dir / "manifest.json", manifest)
    return run_dir


def ship_summaries(run_dir: Path, tmp_path: Path, placements_by_host=None, **summarise_options) -> dict[str, dict]:
    """Each host's files put back into an output directory as the host wrote them, summarised
    there by the host's own method, and the summary gathered into the run directory and
    listed in the manifest (bytes, sha256) like every file a host delivers (placements_by_host:
    where each host's timeline events go, given to it as `run` gives it)."""
    manifest = read_manifest(run_dir)
    returned = {}
    for host in manifest["hosts"]:
        output_dir = tmp_path / f"out-{host['name']}"
        for f in host["files"]:
            rel = XPLANE_PREFIX + f["path"] if f["path"].endswith(".xplane.pb") else f["path"]
            (output_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / f["path"], output_dir / rel)
        options = {"top": host_summary.TOP_OPERATIONS, "max_timeline_events": None, **summarise_options}
        if placements_by_host:
            options["timeline_at"] = placements_by_host[host["name"]]
        returned[host["name"]] = Host(host["name"], output_dir).summarise(**options)
        dest = Path("hosts") / host["name"] / host_summary.SUMMARY
        (run_dir / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(output_dir / host_summary.SUMMARY, run_dir / dest)
        path = run_dir / dest
        host["files"].append({"path": dest.as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    write_json_atomic(run_dir / "manifest.json", manifest)
    return returned


def no_trace_reads(monkeypatch) -> None:
    """Any read of a trace file's events from here on fails the test."""
    from ray_tpu_profile.analysis import device_traces, traces

    def refuse(*args, **kwargs):
        raise AssertionError(f"a trace was read: {args}")

    for module, name in (
        (traces, "xplane_events"),
        (traces, "torch_trace_events"),
        (device_traces, "iter_device_traces"),
    ):
        monkeypatch.setattr(module, name, refuse)


def test_shipped_summaries_give_the_report_of_the_traces_without_reading_them(tmp_path, monkeypatch):
    run_dir = run_with_device_planes(tmp_path)
    from_traces = build_report(run_dir)
    timeline_from_traces = json.load(gzip.open(write_timeline(run_dir, collectives=from_traces["collectives"])))
    assert from_traces["summarised_on"] == {h: "its host shipped none" for h in ("local-sim-w0", "local-sim-w1")}
    returned = ship_summaries(run_dir, tmp_path)
    assert all(r["events"] > 1000 and r["bytes"] > 0 and r["seconds"] > 0 for r in returned.values()), returned
    no_trace_reads(monkeypatch)
    notes: list[str] = []
    report = write_report(run_dir, note=notes.append)
    assert report["summarised_on"] == {"local-sim-w0": "host", "local-sim-w1": "host"}
    assert any(n.startswith("2 host(s) summarised their own traces (") for n in notes), notes
    # The same report, host entries and devices, collectives and stragglers alike.
    assert {**report, "summarised_on": None} == {**from_traces, "summarised_on": None}
    straggling = [s["straggler"] for s in report["stragglers"] if s["straggler"]]
    assert straggling == [{"host": "local-sim-w1", "device": "/device:TPU:1"}]
    timeline = json.load(gzip.open(run_dir / "timeline.json.gz"))
    # The hosts made their pieces without knowing where they go: the driver moved them.
    assert timeline == timeline_from_traces
    kept = timeline["otherData"]["downsampling"]["hosts"]
    assert [kept[h]["trace_events"] for h in kept] == [returned[h]["events"] for h in kept]


def test_a_host_names_its_traces_as_it_sent_them_and_hashes_only_a_file_changed_since(tmp_path, monkeypatch):
    """The summary comes after the gather: the sha256 the host computed as it sent each trace
    is the one its summary names (not hashed a second time); a file touched since is hashed."""
    import os

    from ray_tpu_profile.core.files import CHUNK_BYTES
    from ray_tpu_profile.host import files as host_files

    manifest = read_manifest(JAX)
    entry = manifest["hosts"][0]
    output_dir = tmp_path / "out"
    for f in entry["files"]:
        rel = XPLANE_PREFIX + f["path"] if f["path"].endswith(".xplane.pb") else f["path"]
        (output_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(JAX / f["path"], output_dir / rel)
    host = Host(entry["name"], output_dir)
    sent = {}
    for rel in host.list_paths():  # as the driver's gather reads them out
        for offset in range(0, (output_dir / rel).stat().st_size, CHUNK_BYTES):
            host.read_chunk(rel, offset, CHUNK_BYTES)
        sent[rel] = host.sent_sha256(rel)
    hashed: list[Path] = []
    monkeypatch.setattr(host_files, "sha256_file", lambda path: hashed.append(path) or sha256_file(path))

    def named() -> dict[str, str]:
        assert "error" not in host.summarise(top=host_summary.TOP_OPERATIONS, max_timeline_events=None)
        return host_summary.read_summary_file(output_dir / host_summary.SUMMARY).traces

    traces = [rel for rel in sent if rel.endswith(".xplane.pb")]
    assert traces and sorted(named().values()) == sorted(sent[rel] for rel in traces) and hashed == []
    changed = output_dir / traces[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    assert sorted(named().values()) == sorted(sent[rel] for rel in traces) and hashed == [changed]


def test_a_summary_round_trips_through_its_file(tmp_path):
    run_dir = run_with_device_planes(tmp_path)
    host = read_manifest(run_dir)["hosts"][1]
    made = host_summary.summarise_from_run_dir(run_dir, host, 10, 50)
    assert made.devices and made.devices.ops and made.devices.executions and made.timeline.kept == 50
    path = tmp_path / host_summary.SUMMARY
    host_summary.write_summary(path, made)
    read = host_summary.read_summary_file(path)
    assert {**vars(read), "seconds": 0} == {**vars(made), "seconds": 0}


@pytest.mark.parametrize(
    "spoil, why",
    [
        ("trace changed", "made from other trace files than the manifest lists"),
        ("summary corrupt", "unreadable (BadGzipFile"),
        ("summary cut short", "its timeline piece is"),
        ("not a summary", "not a summary of format 2 (it starts b'not gzip'"),
        ("other format", "not a summary of format 2 (found 99)"),
        ("other options", "made for top 10 and 7 timeline events"),
    ],
)
def test_a_summary_that_cannot_stand_for_the_traces_is_made_again_here_and_says_why(tmp_path, spoil, why):
    run_dir = run_with_device_planes(tmp_path)
    ship_summaries(run_dir, tmp_path, **({"max_timeline_events": 7} if spoil == "other options" else {}))
    manifest = read_manifest(run_dir)
    w1 = manifest["hosts"][1]
    summary_file = run_dir / "hosts" / "local-sim-w1" / host_summary.SUMMARY
    if spoil == "trace changed":
        w1["files"][0]["sha256"] = "0" * 64
        write_json_atomic(run_dir / "manifest.json", manifest)
    elif spoil == "summary corrupt":
        whole = summary_file.read_bytes()
        head = len(host_summary.SUMMARY_MAGIC) + 8
        summary_file.write_bytes(whole[:head] + b"not gzip" + whole[head + 8 :])
    elif spoil == "summary cut short":
        summary_file.write_bytes(summary_file.read_bytes()[:-100])
    elif spoil == "not a summary":
        summary_file.write_bytes(b"not gzip")
    elif spoil == "other format":
        packed = gzip.compress(json.dumps({"format": 99}).encode())
        summary_file.write_bytes(host_summary.SUMMARY_MAGIC + len(packed).to_bytes(8, "big") + packed)
    found, made_where = host_summary.summaries(run_dir, read_manifest(run_dir), 100_000)
    assert made_where["local-sim-w1"].startswith(why), made_where
    expected_w0 = "host" if spoil != "other options" else "made for top 10 and 7 timeline events"
    assert made_where["local-sim-w0"] == expected_w0
    # Made here from the traces: what the host would have made.
    w1_again = read_manifest(run_dir)["hosts"][1]
    again = host_summary.summarise_from_run_dir(run_dir, w1_again, 10, 100_000, found["local-sim-w1"].timeline.at)
    assert {**vars(found["local-sim-w1"]), "seconds": 0} == {**vars(again), "seconds": 0}


def test_a_host_whose_summary_cannot_be_made_says_why_and_leaves_no_summary(tmp_path):
    """A symlink in the output directory (list_paths refuses it): the host returns the
    error instead of raising (it would fail a host whose traces are whole)."""
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "link").symlink_to(tmp_path)
    returned = Host("h0", output_dir).summarise(10, None)
    assert returned == {"error": f"ValueError: host h0: refusing symlink {output_dir / 'link'}"}
    assert not (output_dir / host_summary.SUMMARY).exists()


def test_a_summary_names_the_trace_it_could_not_read(tmp_path):
    output_dir = tmp_path / "out"
    (output_dir / "torch").mkdir(parents=True)
    (output_dir / "torch" / "h0.pt.trace.json").write_text("{not json")
    returned = Host("h0", output_dir).summarise(10, None)
    summary = host_summary.read_summary_file(output_dir / host_summary.SUMMARY)
    assert returned["events"] == 0 and summary.traces == {
        "hosts/h0/torch/h0.pt.trace.json": sha256_file(output_dir / "torch" / "h0.pt.trace.json")
    }
    assert summary.unreadable and summary.unreadable[0].startswith("hosts/h0/torch/h0.pt.trace.json: JSONDecodeError")


def test_pieces_made_where_the_driver_will_put_them_are_spliced_as_they_are(tmp_path, monkeypatch):
    """Given its placement (as `run` gives it: the origin is the first warmup, known before
    any trace), each host's piece goes into timeline.json.gz byte for byte: nothing is
    decompressed or moved, and the file is one ordinary gzip stream."""
    import subprocess

    from ray_tpu_profile.analysis import gzip_splice, timeline

    run_dir = run_with_device_planes(tmp_path)
    from_traces = json.load(gzip.open(write_timeline(run_dir)))
    manifest = read_manifest(run_dir)
    at = placements(manifest, timeline_origin_ns(manifest))
    ship_summaries(run_dir, tmp_path, placements_by_host=at)

    def no_decompress(piece):
        raise AssertionError("a host's piece was decompressed")

    monkeypatch.setattr(gzip_splice, "decompress", no_decompress)
    moved = []
    real_rebased = timeline.rebased
    monkeypatch.setattr(
        timeline, "rebased", lambda piece, where: moved.append(piece.at != where) or real_rebased(piece, where)
    )
    path = write_timeline(run_dir)
    assert moved == [False, False]
    assert subprocess.run(["gzip", "-t", str(path)]).returncode == 0
    assert json.load(gzip.open(path)) == from_traces


def test_crc32_combine_is_zlib_s_crc_of_the_joined_data():
    import os
    import zlib

    from ray_tpu_profile.analysis.gzip_splice import crc32_combine

    parts = [b"", b"x", os.urandom(1000), b"ab" * 70_000]
    for a in parts:
        for b in parts:
            assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
