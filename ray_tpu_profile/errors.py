"""Errors the CLI turns into exit codes.

Exit codes are a contract for scripts (README "Exit codes"):
0 ok, 2 bad input, 3 partial run, 4 failed run, 5 stopped by the user or `ray job stop`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3
EXIT_FAILED = 4
EXIT_STOPPED = 5


class ToolError(Exception):
    """Every error this tool raises on purpose: its message is written for the tool's user
    (what failed and why), so it is shown as it is, never as a traceback."""


class ConfigError(ToolError, ValueError):
    """Bad input, found before any model loads. Names the flag and the value."""

    def __init__(self, flag: str, value: object, reason: str):
        self.flag = flag
        self.value = value
        self.reason = reason
        super().__init__(f"{flag} {value}: {reason}")


class RunStopped(BaseException):
    """Raised in the driver on SIGTERM (e.g. `ray job stop`); a BaseException like
    KeyboardInterrupt so that no `except Exception` on the way swallows it."""

    def __init__(self, signal_name: str):
        self.signal_name = signal_name
        super().__init__(f"stopped by {signal_name}")
