"""XSpace files written and read without xplane_pb2, checked against XProf's own readers."""

import json
from collections import Counter, defaultdict
from collections.abc import Sequence

import pytest

from ray_tpu_profile.analysis.xspace import (
    EventRecord,
    EventSpec,
    LineSpec,
    PlaneSpec,
    XSpace,
    read_planes,
    write_xspace,
)

T0_NS = 1_700_000_000_123_456_789
"""When the capture's lines start (epoch ns, as real captures have)."""
PROFILE_START_NS = T0_NS - 2_000_000
PROFILE_STOP_NS = T0_NS + 200_000_000
PROGRAM_ID = 4242
TPU_PLANE_STATS = {"peak_teraflops_per_second": 918.0, "peak_hbm_bw_gigabytes_per_second": 1640.0}
# name: (hlo_category, flops, bytes_accessed, symbol_id)
HLO_OPS = {
    "while.4": ("control flow", 0, 0, 4),
    "fusion.1": ("convolution", 2_000_000, 65_536, 1),
    "copy.2": ("data formatting", 0, 32_768, 2),
    "all-reduce.3": ("all-reduce", 0, 16_384, 3),
}


def _op(name: str, offset_ps: int, duration_ps: int, run_id: int) -> EventSpec:
    """An `XLA Ops` event as XLA writes one: the op's facts on its metadata, the run on the event."""
    category, flops, bytes_accessed, symbol_id = HLO_OPS[name]
    return EventSpec(
        name=name,
        offset_ps=offset_ps,
        duration_ps=duration_ps,
        stats={"run_id": run_id, "hlo_op": name},
        metadata_stats={
            "program_id": PROGRAM_ID,
            "symbol_id": symbol_id,
            "hlo_category": category,
            "flops": flops,
            "bytes_accessed": bytes_accessed,
        },
    )


def _tpu_plane(device: int, steps: int = 2) -> PlaneSpec:
    """`/device:TPU:<device>`: per step a module, a while op holding a fusion and a copy, an all-reduce."""
    modules, ops, traceme = [], [], []
    scale = device + 1  # devices differ, so a mix-up between planes shows
    for run_id in range(steps):
        step_ps = run_id * 50_000_000_000  # 50 ms apart
        fusion_ps, copy_ps, all_reduce_ps = 7_000_500 * scale, 1_250_250 * scale, 3_000_000
        while_ps = fusion_ps + copy_ps + 2_000_000
        modules.append(
            EventSpec(
                "jit_step(4242)",
                step_ps,
                while_ps + all_reduce_ps + 1_000_000,
                stats={"program_id": PROGRAM_ID, "run_id": run_id},
            )
        )
        ops += [
            _op("while.4", step_ps, while_ps, run_id),
            _op("fusion.1", step_ps + 1_000_000, fusion_ps, run_id),
            _op("copy.2", step_ps + 1_000_000 + fusion_ps, copy_ps, run_id),
            _op("all-reduce.3", step_ps + while_ps + 500_000, all_reduce_ps, run_id),
        ]
        traceme.append(EventSpec("ThunkExecutor::Execute", step_ps + 123_456, 999_999, stats={"run_id": run_id}))
    return PlaneSpec(
        name=f"/device:TPU:{device}",
        stats=TPU_PLANE_STATS,
        lines=[
            LineSpec("XLA Modules", T0_NS, modules),
            LineSpec("XLA Ops", T0_NS, ops),
            LineSpec("XLA TraceMe", T0_NS + 5, traceme),
        ],
    )


def _tpu_like_space(devices: int = 2) -> list[PlaneSpec]:
    """What a TPU host's capture holds: device planes, the host's threads, the task environment."""
    host = PlaneSpec(
        name="/host:CPU",
        lines=[
            LineSpec(
                "python3",
                T0_NS - 1_000_000,
                [
                    EventSpec("PjitFunction(step)", 500_000_000, 90_000_000_000, stats={"run_id": 0}),
                    EventSpec("PjitFunction(step)", 100_000_000_000, 1_500, stats={"run_id": 1}),
                ],
                id=12345,
            )
        ],
    )
    environment = PlaneSpec(
        name="Task Environment",
        stats={"profile_start_time": PROFILE_START_NS, "profile_stop_time": PROFILE_STOP_NS},
    )
    return [_tpu_plane(d) for d in range(devices)] + [host, environment]


def _expected_event(spec: EventSpec, timestamp_ns: int) -> EventRecord:
    """The record the reader owes for an event written from spec."""
    return EventRecord(
        name=spec.name,
        start_ns=timestamp_ns + spec.offset_ps // 1000,
        duration_ns=spec.duration_ps / 1000,
        end_ns=timestamp_ns + (spec.offset_ps + spec.duration_ps) // 1000,
        stats={**spec.metadata_stats, **spec.stats},
    )


@pytest.mark.parametrize("strings_as_refs", [False, True], ids=["str_value", "ref_value"])
def test_a_tpu_like_xspace_reads_back_exactly_as_written(tmp_path, strings_as_refs):
    specs = _tpu_like_space(devices=2)
    path = write_xspace(tmp_path / "h.xplane.pb", specs, hostnames=["h0"], strings_as_refs=strings_as_refs)

    planes = list(read_planes(path))

    assert [p.name for p in planes] == ["/device:TPU:0", "/device:TPU:1", "/host:CPU", "Task Environment"]
    for plane, spec in zip(planes, specs):
        assert plane.stats == spec.stats
        assert [(line.name, line.timestamp_ns) for line in plane.lines] == [
            (line.name, line.timestamp_ns) for line in spec.lines
        ]
        for line, line_spec in zip(plane.lines, spec.lines):
            assert list(line.events) == [_expected_event(e, line.timestamp_ns) for e in line_spec.events]
    # Spot checks written out, so the expectation above is not only the reader's arithmetic again.
    fusion = planes[1].lines[1].events[1]
    assert fusion.name == "fusion.1"
    assert fusion.start_ns == T0_NS + 1_000
    assert (fusion.duration_ns, fusion.end_ns) == (14_001.0, T0_NS + 15_001)
    assert fusion.stats == {
        "program_id": PROGRAM_ID,
        "symbol_id": 1,
        "hlo_category": "convolution",
        "flops": 2_000_000,
        "bytes_accessed": 65_536,
        "run_id": 0,
        "hlo_op": "fusion.1",
    }
    host_event = planes[2].lines[0].events[1]
    assert (host_event.start_ns, host_event.duration_ns) == (T0_NS - 1_000_000 + 100_000_000, 1.5)
    assert host_event.end_ns == host_event.start_ns + 1  # 1.5 ns from a whole ns: ends in the next one
    assert planes[2].lines[0].id == 12345
    assert planes[0].stats == {"peak_teraflops_per_second": 918.0, "peak_hbm_bw_gigabytes_per_second": 1640.0}
    assert planes[3].stats == {"profile_start_time": PROFILE_START_NS, "profile_stop_time": PROFILE_STOP_NS}

    space = XSpace()
    space.ParseFromString(path.read_bytes())
    (fusion_meta,) = (meta for meta in space.planes[0].event_metadata.values() if meta.name == "fusion.1")
    stored = {stat.WhichOneof("value") for stat in fusion_meta.stats}
    assert ("ref_value" in stored) is strings_as_refs
    assert list(space.hostnames) == ["h0"]


def test_event_stats_win_over_their_metadata_stats_and_every_value_type_survives(tmp_path):
    values = {"i": -7, "big": 2**64 - 1, "f": 0.25, "s": "text", "b": b"\x00\xff", "zero": 0}
    event = EventSpec("op", 0, 1_000, stats={"shared": "event", **values}, metadata_stats={"shared": "meta", "m": 1})
    path = write_xspace(tmp_path / "h.xplane.pb", [PlaneSpec("p", [LineSpec("l", 10, [event])])])

    (plane,) = read_planes(path)

    assert plane.lines[0].events[0].stats == {"shared": "event", "m": 1, **values}


def test_read_planes_selects_planes_by_name_and_reads_an_empty_file_as_none(tmp_path):
    path = write_xspace(tmp_path / "h.xplane.pb", _tpu_like_space(devices=3))
    assert [p.name for p in read_planes(path, select=lambda name: name.startswith("/device:TPU:"))] == [
        "/device:TPU:0",
        "/device:TPU:1",
        "/device:TPU:2",
    ]
    (tmp_path / "empty.xplane.pb").write_bytes(b"")
    assert list(read_planes(tmp_path / "empty.xplane.pb")) == []


def test_a_file_that_is_not_an_xspace_is_an_error_naming_it(tmp_path):
    from ray_tpu_profile.analysis.xspace import XSpaceError

    path = tmp_path / "bad.xplane.pb"
    path.write_bytes(b"\x0a\xff\xff\x03 too short")
    with pytest.raises(XSpaceError, match="bad.xplane.pb: truncated"):
        list(read_planes(path))
    with pytest.raises(XSpaceError, match="no such file"):
        list(read_planes(tmp_path / "missing.xplane.pb"))


def test_xprof_reads_the_written_file_as_written(tmp_path):
    from xprof.profile_data import ProfileData

    from ray_tpu_profile.analysis.xplane import read_xplane

    specs = _tpu_like_space(devices=2)
    path = write_xspace(tmp_path / "h.xplane.pb", specs)

    data = ProfileData.from_file(str(path))

    seen = [
        (plane.name, [(line.name, Counter(event.name for event in line.events)) for line in plane.lines])
        for plane in data.planes
    ]
    written = [
        (spec.name, [(line.name, Counter(event.name for event in line.events)) for line in spec.lines])
        for spec in specs
    ]
    assert seen == written
    info = read_xplane(path)
    assert (info.start_ns, info.stop_ns) == (PROFILE_START_NS, PROFILE_STOP_NS)
    assert info.events == sum(len(line.events) for spec in specs for line in spec.lines)
    assert info.planes == tuple(spec.name for spec in specs)


def test_xprof_hlo_stats_self_time_per_category_is_what_the_file_holds(tmp_path):
    from xprof.convert.raw_to_tool_data import xspace_to_tool_data

    path = write_xspace(tmp_path / "h.xplane.pb", _tpu_like_space(devices=2))

    # use_saved_result=False: XProf caches its op stats next to the file and would reuse them.
    raw, _ = xspace_to_tool_data([str(path)], "hlo_stats", {"use_saved_result": False})

    assert raw, "XProf computed no hlo_stats"
    table = json.loads(raw)
    columns = [c["id"] for c in table["cols"]]
    rows = [dict(zip(columns, (cell["v"] for cell in row["c"]))) for row in table["rows"]]
    xprof_self_us: dict[str, float] = defaultdict(float)
    for row in rows:
        xprof_self_us[row["category"]] += row["total_self_time"]
    op_lines = [
        line.events
        for plane in read_planes(path, select=lambda name: name.startswith("/device:TPU:"))
        for line in plane.lines
        if line.name == "XLA Ops"
    ]
    file_self_us: dict[str, float] = defaultdict(float)
    for events in op_lines:
        for category, ns in _self_time_ns_by_category(events).items():
            file_self_us[category] += ns / 1000
    assert set(xprof_self_us) == set(file_self_us) == {cat for cat, *_ in HLO_OPS.values()}
    for category, self_us in file_self_us.items():
        assert xprof_self_us[category] == pytest.approx(self_us, rel=1e-9), category
    assert {row["hlo_op_name"]: row["occurrences"] for row in rows} == Counter(e.name for ev in op_lines for e in ev)
    assert {row["program_id"] for row in rows} == {str(PROGRAM_ID)}


def _self_time_ns_by_category(events: Sequence[EventRecord]) -> dict[str, float]:
    """Each op's duration less that of the ops nested directly in it on its line, summed per hlo_category."""
    self_ns = {}
    open_ops: list[tuple[int, EventRecord]] = []  # enclosing ops, innermost last
    for index, event in sorted(enumerate(events), key=lambda ie: (ie[1].start_ns, -ie[1].duration_ns)):
        while open_ops and event.start_ns >= open_ops[-1][1].end_ns:
            open_ops.pop()
        self_ns[index] = event.duration_ns
        if open_ops:
            self_ns[open_ops[-1][0]] -= event.duration_ns
        open_ops.append((index, event))
    totals: dict[str, float] = defaultdict(float)
    for index, ns in self_ns.items():
        totals[str(events[index].stats["hlo_category"])] += ns
    return dict(totals)


def test_lines_made_relative_to_the_capture_start_are_read_at_their_epoch_time(tmp_path):
    """TSL writes a capture with each line's timestamp made relative to profile_start_time
    (NormalizeTimestamps: every line that began at or after it): the readers add the start
    back, and leave alone a line that began before it (still absolute) and a file without
    a start (a hand-built XSpace)."""
    from ray_tpu_profile.analysis.xspace import profile_start_ns, stream_planes

    relative = EventSpec("all-reduce.1", 2_000_000, 1_000_000, stats={"hlo_op": "all-reduce.1"})
    absolute = EventSpec("PjitFunction(step)", 0, 5_000_000)
    environment = PlaneSpec(
        "Task Environment", stats={"profile_start_time": PROFILE_START_NS, "profile_stop_time": PROFILE_STOP_NS}
    )
    host = PlaneSpec(
        "/host:CPU", [LineSpec("tf_XLAEigen/1", 12_168, [relative]), LineSpec("python", T0_NS, [absolute])]
    )
    path = write_xspace(tmp_path / "tsl.xplane.pb", [host, environment])

    assert profile_start_ns(path) == PROFILE_START_NS
    (plane, _) = read_planes(path)
    assert [line.timestamp_ns for line in plane.lines] == [PROFILE_START_NS + 12_168, T0_NS]
    assert plane.lines[0].events[0].start_ns == PROFILE_START_NS + 12_168 + 2_000
    assert plane.lines[1].events[0].start_ns == T0_NS
    (streamed, _) = stream_planes(path)
    assert [next(events).start_ns for _, events in streamed.lines()] == [PROFILE_START_NS + 14_168, T0_NS]

    no_start = write_xspace(tmp_path / "hand.xplane.pb", [host])
    assert profile_start_ns(no_start) == 0
    assert next(iter(read_planes(no_start))).lines[0].events[0].start_ns == 12_168 + 2_000
