"""Read and write TSL/XLA profiler XSpace files (`*.xplane.pb`) without a generated xplane_pb2.

No package in this environment ships `xplane_pb2`, so the message classes are built at
import time from a hand-written descriptor of tsl/profiler/protobuf/xplane.proto, in a
private DescriptorPool (nothing clashes with another copy of the same proto). Its fields
(numbers, types, oneofs, map entries, proto3) equal those of the descriptor compiled into
xprof's profiler_plugin_c_api.so and jaxlib's libjax_common.so (checked by extracting it).

Reading (`read_planes`) walks the file one XPlane at a time: the XSpace's top-level fields
are split on the wire, so only one plane is ever parsed and turned into plain records
(`PlaneRecord` > `LineRecord` > `EventRecord`), with stat names resolved, `ref_value`
stats resolved to the string they point at, and each event's stats merged with those of
its event metadata.

Writing (`write_xspace`, for tests) builds an XSpace from plain descriptions
(`PlaneSpec` > `LineSpec` > `EventSpec`) and serializes it.

What XProf 2.24 needs to compute `hlo_stats` for a TPU device plane, found by experiment
on files written here (xprof.convert.raw_to_tool_data.xspace_to_tool_data(paths,
"hlo_stats", {"use_saved_result": False}), which returns (JSON table bytes, content type)):
  - a plane named `/device:TPU:<n>` (not `... SparseCore <n>`) with a line named `XLA Ops`
    (the same events on `XLA Modules` give no rows);
  - on each op's *event metadata*, not on the event: `program_id` and a non-zero
    `symbol_id`; XProf keys op metrics by (program_id, symbol_id) and silently drops an op
    missing either (the same stats on the event instead: no rows). `hlo_category`, `flops`
    and `bytes_accessed` are read from the metadata too; str_value or ref_value both do;
  - nothing else: no `/host:metadata` plane (HLO protos), no `Steps` line, no plane stats,
    no `Task Environment` plane (XProf warns "No CoreDetails found" with or without them).
The row's op name is the event metadata's name; self time is an op's duration less that of
the ops nested in it on the same line; the device planes' rows are summed. XProf caches
its op stats next to the file (ALL_HOSTS.op_stats_v2.pb): pass use_saved_result=False, or
a second file written to the same directory is answered from the first one's cache.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from ray_tpu_profile.errors import ToolError


class XSpaceError(ToolError, ValueError):
    pass


StatValue = int | float | str | bytes
"""A stat's value as Python holds it: int64/uint64 -> int, double -> float, str/ref -> str, bytes."""

_PACKAGE = "tensorflow.profiler"
_FDP = descriptor_pb2.FieldDescriptorProto

# (name, number, type, repeated, message type, oneof index) per field, in the proto's order.
_FIELDS: dict[str, list[tuple[str, int, int, bool, str | None, int | None]]] = {
    "XSpace": [
        ("planes", 1, _FDP.TYPE_MESSAGE, True, "XPlane", None),
        ("errors", 2, _FDP.TYPE_STRING, True, None, None),
        ("warnings", 3, _FDP.TYPE_STRING, True, None, None),
        ("hostnames", 4, _FDP.TYPE_STRING, True, None, None),
    ],
    "XPlane": [
        ("id", 1, _FDP.TYPE_INT64, False, None, None),
        ("name", 2, _FDP.TYPE_STRING, False, None, None),
        ("lines", 3, _FDP.TYPE_MESSAGE, True, "XLine", None),
        ("event_metadata", 4, _FDP.TYPE_MESSAGE, True, "XPlane.EventMetadataEntry", None),
        ("stat_metadata", 5, _FDP.TYPE_MESSAGE, True, "XPlane.StatMetadataEntry", None),
        ("stats", 6, _FDP.TYPE_MESSAGE, True, "XStat", None),
    ],
    "XLine": [
        ("id", 1, _FDP.TYPE_INT64, False, None, None),
        ("display_id", 10, _FDP.TYPE_INT64, False, None, None),
        ("name", 2, _FDP.TYPE_STRING, False, None, None),
        ("display_name", 11, _FDP.TYPE_STRING, False, None, None),
        ("timestamp_ns", 3, _FDP.TYPE_INT64, False, None, None),
        ("duration_ps", 9, _FDP.TYPE_INT64, False, None, None),
        ("events", 4, _FDP.TYPE_MESSAGE, True, "XEvent", None),
    ],
    "XEvent": [
        ("metadata_id", 1, _FDP.TYPE_INT64, False, None, None),
        ("offset_ps", 2, _FDP.TYPE_INT64, False, None, 0),
        ("num_occurrences", 5, _FDP.TYPE_INT64, False, None, 0),
        ("duration_ps", 3, _FDP.TYPE_INT64, False, None, None),
        ("stats", 4, _FDP.TYPE_MESSAGE, True, "XStat", None),
    ],
    "XStat": [
        ("metadata_id", 1, _FDP.TYPE_INT64, False, None, None),
        ("double_value", 2, _FDP.TYPE_DOUBLE, False, None, 0),
        ("uint64_value", 3, _FDP.TYPE_UINT64, False, None, 0),
        ("int64_value", 4, _FDP.TYPE_INT64, False, None, 0),
        ("str_value", 5, _FDP.TYPE_STRING, False, None, 0),
        ("bytes_value", 6, _FDP.TYPE_BYTES, False, None, 0),
        ("ref_value", 7, _FDP.TYPE_UINT64, False, None, 0),
    ],
    "XEventMetadata": [
        ("id", 1, _FDP.TYPE_INT64, False, None, None),
        ("name", 2, _FDP.TYPE_STRING, False, None, None),
        ("display_name", 4, _FDP.TYPE_STRING, False, None, None),
        ("metadata", 3, _FDP.TYPE_BYTES, False, None, None),
        ("stats", 5, _FDP.TYPE_MESSAGE, True, "XStat", None),
        ("child_id", 6, _FDP.TYPE_INT64, True, None, None),
    ],
    "XStatMetadata": [
        ("id", 1, _FDP.TYPE_INT64, False, None, None),
        ("name", 2, _FDP.TYPE_STRING, False, None, None),
        ("description", 3, _FDP.TYPE_STRING, False, None, None),
    ],
}
_ONEOFS = {"XEvent": "data", "XStat": "value"}
_MAPS = {"XPlane": [("EventMetadataEntry", "XEventMetadata"), ("StatMetadataEntry", "XStatMetadata")]}


def _add_field(
    message: descriptor_pb2.DescriptorProto,
    spec: tuple[str, int, int, bool, str | None, int | None],
) -> None:
    """Append one field, described as in _FIELDS, to a message descriptor."""
    name, number, type_, repeated, type_name, oneof = spec
    f = message.field.add(name=name, number=number, type=type_)
    f.label = _FDP.LABEL_REPEATED if repeated else _FDP.LABEL_OPTIONAL
    if type_name:
        f.type_name = f".{_PACKAGE}.{type_name}"
    if oneof is not None:
        f.oneof_index = oneof


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """tsl/profiler/protobuf/xplane.proto as a FileDescriptorProto (proto3, like the original)."""
    fd = descriptor_pb2.FileDescriptorProto(
        name="tsl/profiler/protobuf/xplane.proto", package=_PACKAGE, syntax="proto3"
    )
    for message_name, fields in _FIELDS.items():
        message = fd.message_type.add(name=message_name)
        if message_name in _ONEOFS:
            message.oneof_decl.add(name=_ONEOFS[message_name])
        for spec in fields:
            _add_field(message, spec)
        # A protobuf map<int64, V> is a repeated nested "...Entry" message marked map_entry.
        for entry_name, value_type in _MAPS.get(message_name, []):
            entry = message.nested_type.add(name=entry_name)
            entry.options.map_entry = True
            _add_field(entry, ("key", 1, _FDP.TYPE_INT64, False, None, None))
            _add_field(entry, ("value", 2, _FDP.TYPE_MESSAGE, False, value_type, None))
    return fd


def _message_classes() -> dict[str, Any]:
    """The message classes, from a private pool so no other xplane.proto can clash."""
    pool = descriptor_pool.DescriptorPool()
    fd = _file_descriptor()
    pool.AddSerializedFile(fd.SerializeToString())
    file = pool.FindFileByName(fd.name)
    if hasattr(message_factory, "GetMessageClass"):
        return {name: message_factory.GetMessageClass(file.message_types_by_name[name]) for name in _FIELDS}
    found = message_factory.GetMessages([fd], pool=pool)  # an older protobuf, before GetMessageClass
    return {name: found[f"{_PACKAGE}.{name}"] for name in _FIELDS}


_CLASSES = _message_classes()
XSpace = _CLASSES["XSpace"]
XPlane = _CLASSES["XPlane"]
XLine = _CLASSES["XLine"]
XEvent = _CLASSES["XEvent"]
XStat = _CLASSES["XStat"]
XEventMetadata = _CLASSES["XEventMetadata"]
XStatMetadata = _CLASSES["XStatMetadata"]


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class EventRecord:
    name: str
    """The event metadata's name (for an XLA op: the HLO instruction name)."""
    start_ns: int
    """Absolute start: the line's timestamp_ns + offset_ps // 1000 (whole ns: a float cannot
    hold sub-ns steps at epoch scale)."""
    duration_ns: float
    """duration_ps / 1000 (exact to the picosecond for any realistic duration). Not to be added
    to start_ns: an epoch-scale float is only good to ~256 ns; use end_ns."""
    end_ns: int
    """Absolute end: the line's timestamp_ns + (offset_ps + duration_ps) // 1000."""
    stats: dict[str, StatValue]
    """The event's stats over those of its event metadata (the event's win)."""


@dataclass(frozen=True)
class LineRecord:
    id: int
    name: str
    timestamp_ns: int
    events: tuple[EventRecord, ...]


@dataclass(frozen=True)
class PlaneRecord:
    id: int
    name: str
    stats: dict[str, StatValue]
    lines: tuple[LineRecord, ...]


def read_planes(
    path: Path | str, select: Callable[[str], bool] | None = None, requires_stat: str | None = None
) -> Iterator[PlaneRecord]:
    """Each plane of an xplane file (or those whose name `select` accepts), one at a time.
    A plane `select` refuses is never parsed (its name is read off the wire); with
    requires_stat, a plane none of whose stats has that name is skipped before its events
    become records (a host plane of Python-tracer events, when looking for XLA ops)."""
    origin_ns = profile_start_ns(path)
    for plane in _parsed_planes(path, select, requires_stat):
        yield _plane_record(plane, origin_ns)


TASK_ENVIRONMENT_PLANE = "Task Environment"
"""Where the TSL profiler writes profile_start_time / profile_stop_time (epoch ns)."""


def profile_start_ns(path: Path | str) -> int:
    """The capture's profile_start_time (0 where the file has none: a hand-built XSpace).

    TSL writes a capture with its lines' timestamps made relative to that start
    (NormalizeTimestamps: every line that began at or after it); the readers here add it
    back, so that every event is at its epoch time, as EventRecord says."""
    for plane in _parsed_planes(path, lambda name: name == TASK_ENVIRONMENT_PLANE, None):
        stat_names = {key: meta.name for key, meta in plane.stat_metadata.items()}
        start = _stats(plane.stats, stat_names).get("profile_start_time")
        if isinstance(start, int):
            return start
    return 0


def _line_origin_ns(line_timestamp_ns: int, origin_ns: int) -> int:
    """What to add to a line's timestamp for epoch time: the capture's start for a line made
    relative to it (far below it), nothing for one left absolute (one that began before
    the start) or when the file names no start."""
    return origin_ns if line_timestamp_ns < origin_ns // 2 else 0


def _parsed_planes(path: Path | str, select: Callable[[str], bool] | None, requires_stat: str | None) -> Iterator[Any]:
    path = Path(path)
    if not path.is_file():
        raise XSpaceError(f"{path.name}: no such file")
    if path.stat().st_size == 0:
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for plane_bytes in _plane_chunks(buf, path.name):
            if select is not None and not select(_plane_name(plane_bytes, path.name)):
                continue
            plane = XPlane()
            try:
                plane.ParseFromString(plane_bytes)
            except Exception as e:  # protobuf's DecodeError, named with the file
                raise XSpaceError(f"{path.name}: unreadable XPlane ({e})") from None
            del plane_bytes  # the wire copy of this plane, before the next is read
            if requires_stat is not None and all(m.name != requires_stat for m in plane.stat_metadata.values()):
                continue
            yield plane


@dataclass
class PlaneStream:
    """One parsed XPlane whose events become records only as they are walked: what a caller
    that summarises a plane holds is the parsed protobuf (compact, native), not a Python
    object per event. `lines()` may be walked more than once."""

    id: int
    name: str
    stats: dict[str, StatValue]
    _plane: Any
    _stat_names: dict[int, str]
    _events_meta: dict[int, tuple[str, dict[str, StatValue]]]
    _origin_ns: int = 0
    """The capture's profile_start_time, added to its relative line timestamps."""

    def line_names(self) -> list[str]:
        return [line.name for line in self._plane.lines]

    def lines(self, select: Callable[[str], bool] | None = None) -> Iterator[tuple[str, Iterator[EventRecord]]]:
        """(line name, its events one at a time) for each line (that select accepts)."""
        for line in self._plane.lines:
            if select is None or select(line.name):
                yield line.name, _line_events(line, self._events_meta, self._stat_names, self._origin_ns)


def stream_planes(
    path: Path | str, select: Callable[[str], bool] | None = None, requires_stat: str | None = None
) -> Iterator[PlaneStream]:
    """As read_planes, but each plane as a PlaneStream: its events are not made records up
    front (a TPU chip's plane holds millions)."""
    origin_ns = profile_start_ns(path)
    for plane in _parsed_planes(path, select, requires_stat):
        stat_names = {key: meta.name for key, meta in plane.stat_metadata.items()}
        events_meta = {key: (meta.name, _stats(meta.stats, stat_names)) for key, meta in plane.event_metadata.items()}
        stats = _stats(plane.stats, stat_names)
        yield PlaneStream(plane.id, plane.name, stats, plane, stat_names, events_meta, origin_ns)


def _plane_name(plane: bytes, file_name: str) -> str:
    """An XPlane's name (its field 2), read off the wire without parsing its lines."""
    for number, start, end in _length_delimited(plane, file_name):
        if number == 2:
            return bytes(plane[start:end]).decode("utf-8", errors="replace")
    return ""


def _plane_chunks(buf: mmap.mmap, name: str) -> Iterator[bytes]:
    """The serialized XPlanes (XSpace field 1), split off the wire without parsing the rest."""
    for number, start, end in _length_delimited(buf, name):
        if number == 1:
            yield buf[start:end]  # a copy of this plane only


def _length_delimited(buf: mmap.mmap | bytes, name: str) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of each length-delimited field of one message on the wire,
    the other fields skipped; XSpaceError naming the file when it is not well formed."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, name)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(buf, pos, name)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(buf, pos, name)
            if pos + length > end:
                raise XSpaceError(f"{name}: truncated (a field runs past the end of the file)")
            yield number, pos, pos + length
            pos += length
        else:
            raise XSpaceError(f"{name}: not an XSpace (wire type {wire_type} at byte {pos})")
    if pos != end:
        raise XSpaceError(f"{name}: truncated (a field runs past the end of the file)")


def _varint(buf: mmap.mmap | bytes, pos: int, name: str) -> tuple[int, int]:
    """The protobuf varint at pos, and the position after it."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise XSpaceError(f"{name}: not an XSpace (bad varint at byte {pos})")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _plane_record(plane: Any, origin_ns: int = 0) -> PlaneRecord:
    """One parsed XPlane as plain records (origin_ns: profile_start_ns)."""
    stat_names = {key: meta.name for key, meta in plane.stat_metadata.items()}
    events_meta = {key: (meta.name, _stats(meta.stats, stat_names)) for key, meta in plane.event_metadata.items()}
    return PlaneRecord(
        id=plane.id,
        name=plane.name,
        stats=_stats(plane.stats, stat_names),
        lines=tuple(_line_record(line, events_meta, stat_names, origin_ns) for line in plane.lines),
    )


def _line_record(
    line: Any,
    events_meta: Mapping[int, tuple[str, dict[str, StatValue]]],
    stat_names: Mapping[int, str],
    origin_ns: int = 0,
) -> LineRecord:
    """One XLine as a LineRecord, its events' names and stats resolved through the plane's
    metadata, its timestamp at epoch time."""
    return LineRecord(
        id=line.id,
        name=line.name,
        timestamp_ns=line.timestamp_ns + _line_origin_ns(line.timestamp_ns, origin_ns),
        events=tuple(_line_events(line, events_meta, stat_names, origin_ns)),
    )


def _line_events(
    line: Any,
    events_meta: Mapping[int, tuple[str, dict[str, StatValue]]],
    stat_names: Mapping[int, str],
    origin_ns: int = 0,
) -> Iterator[EventRecord]:
    timestamp_ns = line.timestamp_ns + _line_origin_ns(line.timestamp_ns, origin_ns)
    for event in line.events:
        name, meta_stats = events_meta.get(event.metadata_id, ("", {}))
        own = event.stats
        yield EventRecord(
            name=name,
            start_ns=timestamp_ns + event.offset_ps // 1000,
            duration_ns=event.duration_ps / 1000,
            end_ns=timestamp_ns + (event.offset_ps + event.duration_ps) // 1000,
            # The metadata's stats dict is shared, not copied, where the event has none of its own.
            stats={**meta_stats, **_stats(own, stat_names)} if len(own) else meta_stats,
        )


def _stats(stats: Iterable[Any], stat_names: Mapping[int, str]) -> dict[str, StatValue]:
    """{stat name: value} of repeated XStat; a ref_value is the name of the stat metadata it points at."""
    out: dict[str, StatValue] = {}
    for stat in stats:
        kind = stat.WhichOneof("value")
        value: StatValue
        if kind == "ref_value":
            # TSL interns repeated strings as stat metadata and stores a reference to it.
            value = stat_names.get(stat.ref_value, "")
        elif kind is None:
            value = 0  # a stat written with no value (XProf reads it as 0 too)
        else:
            value = getattr(stat, kind)
        out[stat_names.get(stat.metadata_id, "")] = value
    return out


# ---------------------------------------------------------------- writing


@dataclass(frozen=True)
class EventSpec:
    name: str
    offset_ps: int
    """From the line's timestamp_ns."""
    duration_ps: int
    stats: Mapping[str, StatValue] = field(default_factory=dict)
    """Stats on the event itself."""
    metadata_stats: Mapping[str, StatValue] = field(default_factory=dict)
    """Stats on the event's metadata, shared by every event of that name (where XLA puts
    an op's program_id, symbol_id, hlo_category, flops, bytes_accessed)."""


@dataclass(frozen=True)
class LineSpec:
    name: str
    timestamp_ns: int
    events: Sequence[EventSpec] = ()
    id: int | None = None
    """None: the line's index in its plane."""


@dataclass(frozen=True)
class PlaneSpec:
    name: str
    lines: Sequence[LineSpec] = ()
    stats: Mapping[str, StatValue] = field(default_factory=dict)
    id: int | None = None
    """None: the plane's index in the space."""


def write_xspace(
    path: Path | str, planes: Sequence[PlaneSpec], hostnames: Sequence[str] = (), strings_as_refs: bool = False
) -> Path:
    """Serialize the described XSpace to path; returns path."""
    path = Path(path)
    path.write_bytes(build_xspace(planes, hostnames, strings_as_refs).SerializeToString())
    return path


def build_xspace(planes: Sequence[PlaneSpec], hostnames: Sequence[str] = (), strings_as_refs: bool = False) -> Any:
    """An XSpace message from plain descriptions; strings_as_refs stores str stats as ref_value."""
    space = XSpace(hostnames=list(hostnames))
    for index, spec in enumerate(planes):
        _PlaneBuilder(space.planes.add(), strings_as_refs).build(spec, index)
    return space


class _PlaneBuilder:
    """Fills one XPlane, interning stat and event metadata as TSL's XPlaneBuilder does."""

    def __init__(self, plane: Any, strings_as_refs: bool):
        self.plane = plane
        self.strings_as_refs = strings_as_refs
        self.stat_ids: dict[str, int] = {}
        self.event_ids: dict[str, int] = {}
        self.event_meta_stats: dict[str, Mapping[str, StatValue]] = {}

    def build(self, spec: PlaneSpec, index: int) -> None:
        """Write the plane's id, name, stats and lines."""
        self.plane.id = index if spec.id is None else spec.id
        self.plane.name = spec.name
        self.add_stats(self.plane.stats, spec.stats)
        for line_index, line_spec in enumerate(spec.lines):
            line = self.plane.lines.add(
                id=line_index if line_spec.id is None else line_spec.id,
                name=line_spec.name,
                timestamp_ns=line_spec.timestamp_ns,
            )
            for event_spec in line_spec.events:
                event = line.events.add(
                    metadata_id=self.event_metadata_id(event_spec),
                    offset_ps=event_spec.offset_ps,
                    duration_ps=event_spec.duration_ps,
                )
                self.add_stats(event.stats, event_spec.stats)

    def stat_id(self, name: str) -> int:
        """The id of the stat metadata named name, created on first use (ids from 1, as TSL's)."""
        if name not in self.stat_ids:
            self.stat_ids[name] = len(self.stat_ids) + 1
            self.plane.stat_metadata[self.stat_ids[name]].CopyFrom(XStatMetadata(id=self.stat_ids[name], name=name))
        return self.stat_ids[name]

    def event_metadata_id(self, spec: EventSpec) -> int:
        """The id of the event metadata for spec's name; one name has one set of metadata stats."""
        if spec.name in self.event_ids:
            if dict(spec.metadata_stats) != dict(self.event_meta_stats[spec.name]):
                raise ValueError(f"event {spec.name!r}: metadata_stats differ between events of that name")
            return self.event_ids[spec.name]
        metadata_id = len(self.event_ids) + 1
        self.event_ids[spec.name] = metadata_id
        self.event_meta_stats[spec.name] = spec.metadata_stats
        meta = self.plane.event_metadata[metadata_id]
        meta.id, meta.name = metadata_id, spec.name
        self.add_stats(meta.stats, spec.metadata_stats)
        return metadata_id

    def add_stats(self, stats: Any, values: Mapping[str, StatValue]) -> None:
        """Append one XStat per (name, value) to a repeated XStat field."""
        for name, value in values.items():
            stat = stats.add(metadata_id=self.stat_id(name))
            if isinstance(value, bool | int):
                if value >= 1 << 63:
                    stat.uint64_value = value
                else:
                    stat.int64_value = value
            elif isinstance(value, float):
                stat.double_value = value
            elif isinstance(value, str):
                if self.strings_as_refs:
                    stat.ref_value = self.stat_id(value)
                else:
                    stat.str_value = value
            elif isinstance(value, bytes):
                stat.bytes_value = value
            else:
                raise TypeError(f"stat {name!r}: {type(value).__name__} is not int, float, str or bytes")
