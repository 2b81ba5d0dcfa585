"""SIGTERM (`ray job stop`, kill) and SIGINT (Ctrl-C) during a run."""

from __future__ import annotations

import signal
import threading

from ray_tpu_profile.errors import RunStopped


class StopSignals:
    """While entered, SIGTERM and SIGINT set a flag that the run checks between waits
    (check()), then it winds down: actors released, what was captured kept. A flag, not
    an exception from the handler: raised inside Ray's blocking calls it comes out as
    SystemError. With at_once=True (for work that makes no Ray call and never looks at
    the flag, such as writing reports) the handler raises RunStopped itself."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, at_once: bool = False):
        self.at_once = at_once
        self.event = threading.Event()
        self.signal_name: str | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self.event.set()
        if self.at_once:
            raise RunStopped(self.signal_name)

    def check(self) -> None:
        if self.event.is_set():
            raise RunStopped(self.signal_name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> bool:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False
