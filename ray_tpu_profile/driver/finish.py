"""The end of a run, after the hosts are released: the outcome recorded, the reports
derived from the traces, and the run directory made final (renamed into place, or
published to the result URL). The manifest says what happened here too."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ray_tpu_profile.core.records import Stage
from ray_tpu_profile.driver.progress import Progress
from ray_tpu_profile.driver.report_imports import ReportImports
from ray_tpu_profile.driver.signals import StopSignals
from ray_tpu_profile.driver.state import RunState
from ray_tpu_profile.errors import RunStopped
from ray_tpu_profile.rundir import layout


def record_outcome(run: RunState) -> None:
    """Hosts still pending fail where the run ended; the manifest and latency.json are
    written (the reports read them)."""
    run.timings.close()
    run.end_hosts()
    if run.error is None and not run.stopped:
        run.stage = Stage.DONE
    run.write_manifest()
    layout.write_json_atomic(
        run.run_dir / layout.LATENCY, layout.build_latency([w.shape for w in run.config.workloads], run.records)
    )


def write_reports(
    run: RunState, timeline_max_events: int | None, progress: Progress, imports: ReportImports | None = None
) -> None:
    """report.json / report.txt, timeline.json.gz and report.png (derive_reports). A stop
    now (Ctrl-C; SIGTERM from `ray job stop`) ends the reports and is recorded, but never
    keeps a remote run's manifest from being published."""
    run.timings.begin(Stage.REPORTS, None)
    try:
        where = f"on a copy of {layout.redacted_url(run.result_url)}" if run.result_url else "on the run directory"
        run.reports_error, stop_signal = derive_reports(run.run_dir, timeline_max_events, progress, where, imports)
        if stop_signal:
            run.stopped, run.stage = True, Stage.REPORTS
            run.error = run.error or f"stopped during reports ({stop_signal})"
            progress.host_failed(Stage.REPORTS, "all", run.error)
    finally:
        run.timings.close()


def derive_reports(
    run_dir: Path, timeline_max_events: int | None, progress: Progress, where: str, imports: ReportImports | None = None
) -> tuple[str | None, str | None]:
    """Everything `report --write` derives from a run directory, for `run` and `attach`
    alike. Each output fails on its own, and a failure costs nothing already captured.
    imports: the plotting library's import started in the background, waited for here (its
    rest is the reports' time). Returns (why reports are missing, or None; the signal that
    stopped them, or None)."""
    from ray_tpu_profile.analysis.report import write_report

    try:
        with StopSignals(at_once=True):
            if imports is not None:
                imports.wait()
            write_report(run_dir, timeline_max_events, progress.note)
    except RunStopped as e:
        return None, e.signal_name
    except Exception as e:  # the traces and manifest are in place; only what derives from them is missing
        error = f"{type(e).__name__}: {e}"
        progress.host_failed(
            Stage.REPORTS, "all", f"reports not written ({error}); `ray-tpu-profile report --write` {where} tries again"
        )
        return error, None
    return None, None


def place(run: RunState) -> None:
    """A local run's directory, renamed from its staging name into place once its traces are
    verified and its manifest written, before the reports: a kill while they are derived
    (they take minutes on big traces) leaves a complete run where it belongs, whose
    reports `report --write` can make, not one hidden under its staging name. A run that
    goes to a result URL is built here and published whole by finish()."""
    if run.result_url:
        return
    final = run.local_root / run.run_id
    os.replace(run.run_dir, final)
    run.run_dir = final


def finish(run: RunState, progress: Progress) -> str:
    """The final manifest, and the run directory in its place (placed already, or published
    to the result URL, the temporary local copy removed once there). Returns where the run
    directory is."""
    if run.result_url and _publish(run, progress):
        return layout.redacted_url(run.result_url)  # printed and in --json: no password
    run.timings.end()
    run.write_manifest()
    final = run.local_root / run.run_id
    if run.run_dir != final:  # a result URL's run whose publishing failed: kept here
        os.replace(run.run_dir, final)
        run.run_dir = final
    return str(final)


def _publish(run: RunState, progress: Progress) -> bool:
    """The driver's files go up beside the hosts'. If they cannot, the run has failed (its
    results are not where they were asked for): said in the manifest, kept locally."""
    from ray_tpu_profile.rundir.remote import publish_run

    run.timings.begin(Stage.PUBLISH, None)
    try:
        publish_run(run.run_dir, run.result_url, final_manifest=lambda: (run.timings.end(), run.write_manifest()))
    except Exception as e:  # the hosts' files are there; the driver's stay here, and the manifest says so
        run.timings.end()
        run.publish_error = layout.redacted_url(f"{type(e).__name__}: {e}")
        if run.error is None:
            run.stage = Stage.PUBLISH
            run.error = (
                f"publish: could not write the manifest and reports to {layout.redacted_url(run.result_url)} "
                f"({layout.redacted_url(run.publish_error)})"
            )
        progress.host_failed(Stage.PUBLISH, "all", f"{run.error}; they are in {run.local_root / run.run_id}")
        return False
    shutil.rmtree(run.local_root)  # the temporary copy, now uploaded
    progress.note(f"manifest and reports written to {layout.redacted_url(run.result_url)}")
    return True
