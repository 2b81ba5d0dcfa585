"""The reports' plotting library imported in the background while the hosts work.

matplotlib's first import is most of a fresh driver's end-of-run reports: 0.3 s warm, up
to 1 s cold after the hosts' engines have used the machine's memory, the same at any host
count (bench/RESULTS.md, "Where the reports' time goes in a run"). The driver only waits
while its hosts load engines and capture, so the import is done then, on a thread of its
own, and the reports stage waits for whatever is left of it.
"""

from __future__ import annotations

import threading


class ReportImports:
    """One background import of what report.png draws with. A failed import is not lost:
    the reports import the same module where they use it, which raises the error again
    there, into the reports' own error (the traces are never at stake)."""

    def __init__(self) -> None:
        self._thread = threading.Thread(target=self._import, name="ray-tpu-profile-report-imports", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> ReportImports:
        self._thread.start()
        return self

    def wait(self) -> None:
        """Until the import has ended (at once if it has); interruptible by a stop signal."""
        self._thread.join()

    def _import(self) -> None:
        try:
            from ray_tpu_profile.analysis.plot import pyplot

            pyplot()
        except BaseException as e:  # kept; a failed import leaves nothing in sys.modules, so the plot's raises it again
            self.error = e
