"""The host's side of the driver's clock exchange over UDP: a small thread in the host's
actor answers each datagram with this host's clock, as soon as it arrives. An actor call
costs about 1 ms each way through Ray (its floor on this machine); a datagram on the node's
address costs tens of microseconds, and the offset's uncertainty is half the round trip.

Open only while the driver measures (open, then close once it is done). It answers only
datagrams from the driver's address that carry the run's token (16 random bytes the
driver gave it through Ray), with a reply no larger than the request: nothing else on the
network can use it, nor use it to send traffic elsewhere.

Wire format (big-endian): request token(16) seq(8); reply token(16) seq(8) host_ns(8).
"""

from __future__ import annotations

import socket
import struct
import threading

from ray_tpu_profile.core import host_clock

TOKEN_BYTES = 16
REQUEST = struct.Struct(f">{TOKEN_BYTES}sQ")
REPLY = struct.Struct(f">{TOKEN_BYTES}sQq")
IDLE_CLOSE_S = 120.0
"""An echo left open (a driver that died between open and close) closes itself after
this long without a valid request."""


class ClockEcho:
    """Answers the driver's clock datagrams on (bind_ip, an OS-picked port) until closed."""

    def __init__(self, token: bytes, driver_ip: str, bind_ip: str):
        if len(token) != TOKEN_BYTES:
            raise ValueError(f"a clock echo token is {TOKEN_BYTES} bytes, not {len(token)}")
        self.token = token
        self.driver_ip = driver_ip
        self._sock = socket.socket(socket.AF_INET6 if ":" in bind_ip else socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((bind_ip, 0))
        self._sock.settimeout(IDLE_CLOSE_S)
        self.address: tuple[str, int] = self._sock.getsockname()[:2]
        self.answered = 0
        self.ignored = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ray-tpu-profile-clock-echo", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        now_ns = host_clock.now_ns
        while not self._closed.is_set():
            try:
                data, sender = self._sock.recvfrom(REQUEST.size + 1)
            except TimeoutError:
                break  # no driver asked for IDLE_CLOSE_S: it is gone
            except OSError:
                break  # closed under us by close()
            host_ns = now_ns()  # first, before anything else: the reply's timestamp
            if self._closed.is_set():
                break  # close()'s wake-up
            if sender[0] != self.driver_ip or len(data) != REQUEST.size:
                self.ignored += 1
                continue
            token, seq = REQUEST.unpack(data)
            if token != self.token:
                self.ignored += 1
                continue
            self._sock.sendto(REPLY.pack(token, seq, host_ns), sender)
            self.answered += 1
        self._closed.set()

    def close(self) -> dict[str, int]:
        """Stop answering; returns how many requests were answered and ignored."""
        if not self._closed.is_set():
            self._closed.set()
            # A blocked recvfrom is not woken by closing its socket from another thread:
            # an empty datagram wakes it, and it sees it is closed.
            with socket.socket(self._sock.family, socket.SOCK_DGRAM) as waker:
                waker.sendto(b"", self.address)
            self._thread.join(timeout=5)
        self._sock.close()
        return {"answered": self.answered, "ignored": self.ignored}


class ClockEchoHost:
    """Mixin for a host's actor (run's HostActor, attach's AttachActor): opens and closes
    its clock echo for the driver, on this node's address as Ray knows it."""

    _clock_echo: ClockEcho | None = None

    def open_clock_echo(self, token: bytes, driver_ip: str) -> dict[str, object]:
        """{"address": [ip, port]} of a fresh echo, or {"error": why none could be opened}
        (the driver then measures over actor calls)."""
        import ray

        self.close_clock_echo()
        try:
            self._clock_echo = ClockEcho(token, driver_ip, ray.util.get_node_ip_address())
        except (OSError, ValueError) as e:  # returned: the driver falls back and says why
            return {"error": f"{type(e).__name__}: {e}"}
        return {"address": list(self._clock_echo.address)}

    def close_clock_echo(self) -> dict[str, int] | None:
        """Close the echo (if open); how many datagrams it answered and ignored."""
        echo, self._clock_echo = self._clock_echo, None
        return echo.close() if echo else None
