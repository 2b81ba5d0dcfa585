"""XProf's web UI on a run directory, reachable from this machine only: what `view` starts
(`python -m ray_tpu_profile.rundir.view_server LOGDIR PORT`).

`xprof --logdir` binds its web server and its gRPC conversion worker to every interface
(checked with `ss -ltn`: `*:PORT`), and serves a capture route that makes the server
connect to any address it is given. Here the same plugin serves from 127.0.0.1 only; no
gRPC worker is started (conversions run in this process, as xprof's own do when no
distributed workers are configured: checked with the trace viewer and overview page);
the capture button is hidden and its route removed."""

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
    # The route stays unknown to the app: a request for it gets xprof's own 404.
    plugin.get_plugin_apps = lambda: {route: app for route, app in apps().items() if route != CAPTURE_ROUTE}
    xprof_server.run_server(plugin, LOOPBACK, port)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
