"""[dask] inside Jupyter: the local cluster, and the gate of jupyter-server-proxy.

jupyter-server-proxy would reach every port of this machine and forward the browser's cookies to
it (jupyter-server-proxy#590). Its one hook, `host_allowlist` given as a callable, is asked before
every proxied request and websocket, with the handler: the gate lets through only the dashboard of
the cluster the notebooks use (host and port), and takes Jupyter's cookie and credentials off the
request first, so the dashboard never holds the login. `ServerProxy.host_allowlist` reaches only
its /proxy/<host>:<port>/ routes; /proxy/<port>/ would reach any local port, so the gate is set on
every route of a proxy handler once the extensions are loaded.

The local cluster (cluster = "local") runs in the notebooks' Python, so its workers import what
the notebooks do, on the loopback ports the daemon chose; it is restarted when it ends, and ends
with Jupyter (it reads its stdin, a pipe from here, until it closes). For a remote cluster the
gate asks the scheduler (over its TLS) where its dashboard is.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.parse

from tornado.ioloop import IOLoop, PeriodicCallback
from traitlets import Int, Unicode
from traitlets.config import Configurable

CHECK_INTERVAL_MS = 2000
RESTART_DELAYS = (2, 5, 15, 60)  # seconds before restarting a local cluster that ended
# Seconds between asking a remote scheduler for its dashboard: once known, and while not yet.
REMOTE_DASHBOARD_REFRESH = (30, 3)
# What the browser sends that belongs to Jupyter's login, never to a proxied dashboard.
LOGIN_HEADERS = ("Cookie", "Authorization", "X-XSRFToken")


class DaskGate(Configurable):
    """Rendered by the daemon (supervisor.dask.plan.extension_config)."""

    scheduler = Unicode("", config=True, help="the scheduler address the notebooks use")
    python = Unicode("", config=True, help="the notebooks' Python, for the local cluster")
    dashboard_port = Int(0, config=True, help="cluster = local: the dashboard's loopback port")
    script = Unicode("", config=True, help="cluster = local: the script that runs it")

    def __init__(self, serverapp, **kwargs):
        super().__init__(parent=serverapp, **kwargs)
        self.serverapp = serverapp
        self.log = serverapp.log
        self.allowed: set[tuple[str, int]] = set()
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.restart_at = 0.0
        self.remote_checked_at = float("-inf")
        if self.dashboard_port:
            self.allowed = {("127.0.0.1", self.dashboard_port), ("localhost", self.dashboard_port)}

    @property
    def enabled(self) -> bool:
        return bool(self.scheduler)

    # --- the proxy's gate ------------------------------------------------------------------------

    def allows(self, handler, host: str) -> bool:
        for header in LOGIN_HEADERS:
            handler.request.headers.pop(header, None)
        target = (host, _port_of(handler))
        if target in self.allowed:
            return True
        handler.log.warning("jupyter-remote: proxy to %s:%s refused: not the Dask dashboard",
                            *target)
        return False

    # --- keeping the cluster, or finding the remote dashboard -------------------------------------

    def start(self):
        # The first tick one interval later: the cluster's start (a Python importing distributed,
        # and its workers) would otherwise take the CPU from Jupyter's own, and delay READY=1.
        PeriodicCallback(self.tick, CHECK_INTERVAL_MS).start()

    def tick(self):
        try:
            if self.dashboard_port:
                self.keep_local_cluster()
            elif (time.monotonic() - self.remote_checked_at
                  >= REMOTE_DASHBOARD_REFRESH[not self.allowed]):
                self.remote_checked_at = time.monotonic()
                IOLoop.current().add_callback(self.find_remote_dashboard)
        except Exception:  # the loop must outlive any one bad tick
            self.log.exception("jupyter-remote: Dask check failed")

    def keep_local_cluster(self):
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                return
            self.process = None
            delay = RESTART_DELAYS[min(self.restarts, len(RESTART_DELAYS) - 1)]
            self.restarts += 1
            self.restart_at = time.monotonic() + delay
            self.log.error("jupyter-remote: the local Dask cluster ended (exit %s); restarting "
                           "in %s s", code, delay)
        if time.monotonic() < self.restart_at:
            return
        scheduler_port = urllib.parse.urlsplit(self.scheduler).port
        # stdout and stderr are Jupyter's own: the daemon logs them behind "[jupyter]".
        activity = self.serverapp.config.get("JupyterRemoteIdle", {}).get("activity_file", "")
        self.process = subprocess.Popen(
            [self.python, self.script, str(scheduler_port), str(self.dashboard_port), activity],
            stdin=subprocess.PIPE, cwd=os.path.expanduser("~"))

    async def find_remote_dashboard(self):
        host = urllib.parse.urlsplit(self.scheduler).hostname or ""
        try:
            from distributed.core import rpc
            from distributed.security import Security

            arguments = Security().get_connection_args("client")
            async with rpc(self.scheduler, connection_args=arguments, timeout=10) as scheduler:
                identity = await scheduler.identity()
            port = int(identity.get("services", {}).get("dashboard", 0))
        except Exception as error:
            self.log.warning("jupyter-remote: cannot ask the Dask scheduler %s for its dashboard: "
                             "%s", self.scheduler, error)
            return
        found = {(host, port)} if port else set()
        if found != self.allowed:
            self.log.info("jupyter-remote: the Dask dashboard of %s is on port %s", self.scheduler,
                          port or "none")
        self.allowed = found


def _port_of(handler) -> int:
    """The port a jupyter-server-proxy handler is about to reach: /proxy/<port>/... passes
    (port, path), /proxy/<host>:<port>/... (host, port, path); any other handler is refused."""
    arguments = handler.path_args
    from jupyter_server_proxy.handlers import LocalProxyHandler, RemoteProxyHandler

    try:
        if isinstance(handler, RemoteProxyHandler):
            return int(arguments[1])
        if isinstance(handler, LocalProxyHandler):
            return int(arguments[0])
    except (IndexError, TypeError, ValueError):
        pass
    return -1


def install(serverapp) -> DaskGate | None:
    """Before jupyter_server_proxy loads (extensions load in name order): hand it the gate."""
    gate = DaskGate(serverapp)
    if not gate.enabled:
        return None

    # A plain function: traitlets deep-copies config values, and with a bound method it would
    # copy the gate, and through it the whole server.
    def host_allowlist(handler, host):
        return gate.allows(handler, host)

    serverapp.config.ServerProxy.host_allowlist = host_allowlist
    # Once every extension has added its routes, and before Jupyter listens.
    serverapp.io_loop.add_callback(_gate_every_proxy_route, serverapp, host_allowlist)
    serverapp.io_loop.add_callback(gate.start)
    return gate


def _gate_every_proxy_route(serverapp, host_allowlist) -> None:
    from jupyter_server_proxy.handlers import ProxyHandler

    gated = 0
    pending = list(serverapp.web_app.default_router.rules)
    while pending:
        rule = pending.pop()
        target = rule.target
        if isinstance(target, type) and issubclass(target, ProxyHandler):
            rule.target_kwargs["host_allowlist"] = host_allowlist
            gated += 1
        pending += getattr(target, "rules", [])  # a router of rules (one per host pattern)
    serverapp.log.info("jupyter-remote: %s proxy routes reach the Dask dashboard alone", gated)
