"""XProf's web UI on a run directory, reachable from this machine only: what `view` starts
(`python -m ray_tpu_profile.rundir.view_server LOGDIR PORT`).

`xprof --logdir` binds its web server and its gRPC conversion worker to every interface
(checked with `ss -ltn`: `*:PORT`), and serves a capture route that makes the server
connect to any address it is given. Here the same plugin serves from 127.0.0.1 only; no
gRPC worker is started (conversions run in this process, as xprof's own do when no
distributed workers are configured: checked with the trace viewer and overview page);
the capture button is hidden and its route answers 404."""

from __future__ import annotations

import sys

LOOPBACK = "127.0.0.1"
CAPTURE_ROUTE = "/capture_profile"


def serve(logdir: str, port: int) -> None:
    from xprof import server as xprof_server

    context = xprof_server.TBContext(logdir, xprof_server.DataProvider(logdir), xprof_server.TBContext.Flags(False))
    context.hide_capture_profile_button = True
    context.enable_tab_name_label = False
    context.src_prefix = None
    plugin = xprof_server.ProfilePluginLoader().load(context)
    apps = plugin.get_plugin_apps
    # Answered, not dropped: an unknown route under the plugin's prefix would get the UI's page.
    plugin.get_plugin_apps = lambda: {**apps(), CAPTURE_ROUTE: _capture_refused}
    xprof_server.run_server(plugin, LOOPBACK, port)


def _capture_refused(environ: dict, start_response) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"capture is off: ray-tpu-profile view only shows what a run captured\n"]


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
