"""Captures asked of another process on the same host over a Unix socket: a worker of an
engine across hosts (`run`) or a live vLLM process (`attach`) serves one; the tool's actor
on that host asks it to trace itself (in_process.capture) at an instant.

Who can ask: the socket lives in a directory only its user can enter (mkdtemp, 0700), is
itself 0600, and the listener answers only peers of its own uid (SO_PEERCRED). The asker
checks the socket is its user's and that the process answering is the one it means to
trace (the peer's pid). No port: nothing on another machine can reach it.

Protocol: one JSON line each way per connection. Request {"op": "ping"} or {"op":
"capture", logdir, session_id, host_name, wall_start_ns, duration_ms, python_tracer_level,
real_time_start (optional, default true)}; answer {"pid", "error"} (+ "path", "no_events",
"start_wake_up" for a capture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

from ray_tpu_profile.profilers import in_process

SOCKET_NAME = "capture.sock"
SOCKET_DIR_PREFIX = "ray-tpu-profile-capture-"
MAX_SOCKET_PATH_BYTES = 107
"""sun_path holds 108 bytes, the terminating NUL included."""
MAX_LINE_BYTES = 64 << 10
REQUEST_READ_TIMEOUT_S = 5.0
"""A peer of this user that connects and sends nothing is dropped after this."""
CONNECT_TIMEOUT_S = 5.0
ANSWER_SLACK_S = 60.0
"""Beyond a capture's window: writing the trace out (seen: 20-40 ms for small ones)."""
MAX_WINDOW_END_S = 3600 + 600
"""A request whose window ends later than this from now is refused (attach caps --delay-ms
at an hour and a production --duration-ms at 30 s; run's windows are shorter)."""
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
"""A session or host name: a folder and a file name, no separators."""


class CaptureRefused(RuntimeError):
    """The process asked could not, or would not, take the capture (its reason attached)."""


class NotThisProcess(RuntimeError):
    """The socket is answered by another process than the one to trace."""


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket."""
    data = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def request_problem(data: Any) -> str | None:
    """What is wrong with a request as read, or None (pure)."""
    import time

    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("op") == "ping":
        return None
    if data.get("op") != "capture":
        return f"op {data.get('op')!r}"
    logdir = data.get("logdir")
    if not isinstance(logdir, str) or "\0" in logdir or not os.path.isabs(logdir):
        return f"logdir {logdir!r}: an absolute path"
    for key in ("session_id", "host_name"):
        if not isinstance(data.get(key), str) or not NAME.match(data[key]) or ".." in data[key]:
            return f"{key} {data.get(key)!r}"
    ints = ("wall_start_ns", "duration_ms", "python_tracer_level")
    if not all(isinstance(data.get(k), int) and not isinstance(data.get(k), bool) for k in ints):
        return f"{', '.join(ints)} must be integers"
    if data["duration_ms"] <= 0:
        return f"duration_ms {data['duration_ms']}"
    if data["python_tracer_level"] not in (0, 1):
        return f"python_tracer_level {data['python_tracer_level']}"
    if not isinstance(data.get("real_time_start", True), bool):
        return f"real_time_start {data['real_time_start']!r}: true or false"
    end_s = data["wall_start_ns"] / 1e9 + data["duration_ms"] / 1000 - time.time()
    if end_s > MAX_WINDOW_END_S:
        return f"the window ends {end_s:.0f} s from now (at most {MAX_WINDOW_END_S} s)"
    return None


def _read_line(conn: socket.socket) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > MAX_LINE_BYTES:
            raise ValueError(f"a line longer than {MAX_LINE_BYTES} bytes")
    return bytes(buffer.split(b"\n", 1)[0])


class CaptureListener:
    """In the process to be traced: serves capture requests of this user on a Unix socket
    in a fresh private directory. Keep it alive as long as the process may be traced;
    close() removes the socket and its directory."""

    def __init__(self, kind: str, parent_dir: str | None = None):
        if kind not in ("jax", "xla"):
            raise ValueError(f"unknown profiler {kind!r}")
        self.kind = kind
        self.directory = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX, dir=parent_dir))  # 0700, ours
        self.path = self.directory / SOCKET_NAME
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH_BYTES:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise ValueError(
                f"capture socket path {self.path} is longer than {MAX_SOCKET_PATH_BYTES} bytes: set TMPDIR shorter"
            )
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)  # the socket is created 0600, never briefly wider
        try:
            self._sock.bind(str(self.path))
        finally:
            os.umask(previous)
        self._sock.listen(16)
        self._closed = False
        self._owner_pid = os.getpid()
        self._thread = threading.Thread(target=self._serve, name="ray-tpu-profile-capture-socket", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:  # closed
                return
            # Each request in its own thread: a capture lasts its window, and a second
            # request meanwhile must be answered (busy), not queued behind it.
            threading.Thread(target=self._answer, args=(conn,), name="ray-tpu-profile-capture", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                _, uid, _ = peer_credentials(conn)
            except OSError:
                traceback.print_exc()  # who asks is unknown: no answer, but the log says why
                return
            if uid != os.getuid():
                return  # another user: no answer at all
            try:
                self._answer_request(conn)
            except Exception as e:  # a bug here must reach the asker, not end the thread mute
                traceback.print_exc()  # the model process's log keeps where it happened
                self._reply(conn, {"error": f"the capture socket failed: {type(e).__name__}: {e}"})

    def _answer_request(self, conn: socket.socket) -> None:
        """Reads one request of this user's peer and answers it."""
        conn.settimeout(REQUEST_READ_TIMEOUT_S)
        try:
            data = json.loads(_read_line(conn))
        except (OSError, ValueError) as e:
            self._reply(conn, {"error": f"unreadable request: {e}"})
            return
        problem = request_problem(data)
        if problem:
            self._reply(conn, {"error": f"bad request: {problem}"})
            return
        if data["op"] == "ping":
            self._reply(conn, {"error": None})
            return
        conn.settimeout(None)  # the capture lasts its window; the asker bounds its own wait
        try:
            captured = in_process.capture(
                self.kind,
                Path(data["logdir"]),
                session_id=data["session_id"],
                host_name=data["host_name"],
                wall_start_ns=data["wall_start_ns"],
                duration_ms=data["duration_ms"],
                python_tracer_level=data["python_tracer_level"],
                real_time_start=data.get("real_time_start", True),
            )
        except Exception as e:  # the asker's error, sent back to it
            self._reply(conn, {"error": f"{type(e).__name__}: {e}", "no_events": isinstance(e, in_process.NoEvents)})
            return
        self._reply(conn, {"error": None, "path": str(captured.path), "start_wake_up": captured.start_wake_up})

    @staticmethod
    def _reply(conn: socket.socket, answer: dict[str, Any]) -> None:
        try:
            conn.sendall(json.dumps({**answer, "pid": os.getpid()}).encode() + b"\n")
        except OSError:
            pass  # the asker gave up (its own timeout); nothing left to tell it

    def close(self) -> None:
        if self._closed or os.getpid() != self._owner_pid:
            return  # a forked child's copy (at its exit): the socket is its parent's
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # never connected: nothing to shut down
        self._sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def listener_directory(path: str) -> Path | None:
    """The private directory a CaptureListener made for the socket at path, or None where
    path is not a listener's socket: what a host removes for a process that is killed,
    not closed (an engine's workers)."""
    socket_path = Path(path)
    directory = socket_path.parent
    return directory if socket_path.name == SOCKET_NAME and directory.name.startswith(SOCKET_DIR_PREFIX) else None


def socket_problem(path: str) -> str | None:
    """Whether path may be asked for a capture by this user: an absolute path to a socket
    named SOCKET_NAME that is this user's, in a directory that is this user's and 0700."""
    if not isinstance(path, str) or "\0" in path or not os.path.isabs(path) or ".." in Path(path).parts:
        return f"capture socket {path!r}: an absolute path"
    if Path(path).name != SOCKET_NAME or len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        return f"capture socket {path!r}: not a {SOCKET_NAME} path"
    try:
        directory, sock = os.lstat(Path(path).parent), os.lstat(path)
    except OSError as e:
        return f"capture socket {path}: {e.strerror}"
    if not stat.S_ISDIR(directory.st_mode) or directory.st_uid != os.getuid() or directory.st_mode & 0o077:
        return f"capture socket {path}: its directory is not this user's own (0700)"
    if not stat.S_ISSOCK(sock.st_mode) or sock.st_uid != os.getuid():
        return f"capture socket {path}: not a socket of this user"
    return None


def ask(path: str, request: dict[str, Any], expected_pid: int | None, timeout_s: float) -> dict[str, Any]:
    """Send one request to the listener at path and return its answer. CaptureRefused when
    the socket is not this user's or does not answer; NotThisProcess when its process is not
    expected_pid."""
    problem = socket_problem(path)
    if problem:
        raise CaptureRefused(problem)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(CONNECT_TIMEOUT_S)
        try:
            conn.connect(path)
        except OSError as e:
            raise CaptureRefused(f"capture socket {path}: {e.strerror or e}") from None
        pid, _, _ = peer_credentials(conn)
        if expected_pid is not None and pid != expected_pid:
            raise NotThisProcess(f"capture socket {path} is served by pid {pid}, not pid {expected_pid}")
        conn.settimeout(timeout_s)
        conn.sendall(json.dumps(request).encode() + b"\n")
        try:
            line = _read_line(conn)
        except TimeoutError:
            raise CaptureRefused(f"capture socket {path}: no answer within {timeout_s:g} s") from None
    if not line:
        raise CaptureRefused(f"capture socket {path}: closed without an answer ({_whether_alive(pid)})")
    return json.loads(line)


EXIT_SETTLE_S = 2.0
"""How long a socket's closing waits for its process's exit to show, where it has not yet."""


def _whether_alive(pid: int, settle_s: float = EXIT_SETTLE_S) -> str:
    """Whether the process that served a socket still runs: an answer lost to its death is
    told apart from one its listener failed to give. A killed process closes its sockets
    before it has exited (a zombie, to its parent), so a closed socket can come first: the
    process's pidfd, which turns readable once it has exited, is waited on for settle_s."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return f"pid {pid} has exited"
    except OSError as e:
        return f"pid {pid}: {e.strerror}"
    try:
        readable, _, _ = select.select([pidfd], [], [], settle_s)
    finally:
        os.close(pidfd)
    return f"pid {pid} has exited" if readable else f"pid {pid} is still running"


def ping(path: str, expected_pid: int | None) -> None:
    """Whether the listener at path answers (and is expected_pid's); raises if not."""
    answer = ask(path, {"op": "ping"}, expected_pid, CONNECT_TIMEOUT_S)
    if answer.get("error"):
        raise CaptureRefused(f"capture socket {path}: {answer['error']}")


def request_capture(
    path: str,
    expected_pid: int | None,
    *,
    logdir: Path,
    session_id: str,
    host_name: str,
    wall_start_ns: int,
    duration_ms: int,
    python_tracer_level: int,
    real_time_start: bool = True,
) -> in_process.Captured:
    """The process at path traces itself from wall_start_ns (real wall clock) for duration_ms
    into logdir. in_process.NoEvents when its window held nothing."""
    import time

    timeout_s = max(0.0, (wall_start_ns - time.time_ns()) / 1e9) + duration_ms / 1000 + ANSWER_SLACK_S
    request = {
        "op": "capture",
        "logdir": str(Path(logdir).resolve()),
        "session_id": session_id,
        "host_name": host_name,
        "wall_start_ns": wall_start_ns,
        "duration_ms": duration_ms,
        "python_tracer_level": python_tracer_level,
        "real_time_start": real_time_start,
    }
    answer = ask(path, request, expected_pid, timeout_s)
    if answer.get("no_events"):
        raise in_process.NoEvents(answer["error"])
    if answer.get("error"):
        raise CaptureRefused(f"capture in pid {answer.get('pid')}: {answer['error']}")
    # A listener of a release before start_wake_up does not say how it woke.
    return in_process.Captured(Path(answer["path"]), answer.get("start_wake_up") or "unknown (not reported)")
