"""Progress lines on stderr while a run goes (stdout stays free for --json)."""

from __future__ import annotations

import time

from rich.console import Console


class Progress:
    def __init__(self, quiet: bool = False):
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self.t0 = time.monotonic()

    def _line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]{time.monotonic() - self.t0:7.1f}s[/dim] {text}")

    def stage(self, stage: str, hosts: list[str]) -> None:
        self._line(f"[bold]{stage}[/bold] on {len(hosts)} host(s): {', '.join(hosts)}")

    def host_ok(self, stage: str, host: str, detail: str) -> None:
        self._line(f"  {stage:<8} {host:<20} [green]ok[/green]  {detail}")

    def host_failed(self, stage: str, host: str, error: str) -> None:
        # Failures print even when quiet: they are what a user must not miss.
        self.console.print(f"  {stage:<8} {host:<20} [red]FAILED[/red] {error}")

    def note(self, text: str) -> None:
        self._line(text)
