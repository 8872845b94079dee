"""[dask] inside Jupyter: the local cluster, and the one proxy route to its dashboard.

jupyter-server-proxy, enabled as an extension, would reach every port of this machine (its
/proxy/<port>/ routes do not even ask its `host_allowlist`) and forward the browser's cookies
(jupyter-server-proxy#590). So it is not enabled: this extension adds one route of its handler,
/proxy/<host>:<port>/, whose every request and websocket first asks the gate. The gate lets
through only the dashboard of the cluster the notebooks use, only to read it (GET, which
websockets are too), never to fetch a service worker (which could claim this origin's pages, the
login's among them), and takes the login's cookie and credentials off the request. The local
cluster's dashboard port must also be listened on by this account: should the cluster be down,
another user who took its port gets nothing through; and the route's host is a literal address
(never "localhost", which may resolve to a ::1 anybody can bind).

The local cluster (cluster = "local") runs in the notebooks' Python, so its workers import what
the notebooks do, on the loopback ports the daemon chose; it is restarted when it ends, and ends
with Jupyter (it reads its stdin, a pipe from here, until it closes). For a tls:// cluster the gate
asks the scheduler, over the cluster's mutual TLS, where its dashboard is; a tcp:// scheduler is
not asked (anyone on the path could answer, and distributed unpickles what it answers): its
dashboard is taken to be on distributed's default port, 8787.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.parse

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.ioloop import IOLoop, PeriodicCallback
from traitlets import Int, Unicode
from traitlets.config import Configurable

CHECK_INTERVAL_MS = 2000
RESTART_DELAYS = (2, 5, 15, 60)  # seconds before restarting a local cluster that ended
# Seconds between asking a remote scheduler for its dashboard: once known, and while not yet.
REMOTE_DASHBOARD_REFRESH = (30, 3)
DEFAULT_DASHBOARD_PORT = 8787
# What the browser sends that belongs to Jupyter's login, never to a proxied dashboard.
LOGIN_HEADERS = ("Cookie", "Authorization", "X-XSRFToken")
READ_METHODS = ("GET", "HEAD")
LISTEN = "0A"  # the state column of /proc/net/tcp


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
        parsed = urllib.parse.urlsplit(self.scheduler)
        if self.dashboard_port:
            self.allowed = {("127.0.0.1", self.dashboard_port)}
        elif parsed.scheme == "tcp":
            self.allowed = {(parsed.hostname or "", DEFAULT_DASHBOARD_PORT)}

    @property
    def enabled(self) -> bool:
        return bool(self.scheduler)

    # --- the proxy's gate ------------------------------------------------------------------------

    def allows(self, handler, host: str) -> bool:
        request = handler.request
        for header in LOGIN_HEADERS:
            request.headers.pop(header, None)
        port = int(handler.path_args[1])
        refusal = None
        if request.method not in READ_METHODS:
            refusal = f"{request.method} (the dashboard is only read)"
        elif "Service-Worker" in request.headers:
            refusal = "a service worker's script"
        elif (host, port) not in self.allowed:
            refusal = "not the Dask dashboard"
        elif self.dashboard_port and not listened_by_us(port):
            refusal = "the port is not the local cluster's (another user's, or nobody's)"
        if refusal:
            handler.log.warning("jupyter-remote: proxy to %s:%s refused: %s", host, port, refusal)
            return False
        return True

    # --- keeping the cluster, or finding the remote dashboard -------------------------------------

    def start(self):
        # The first tick one interval later: the cluster's start (a Python importing distributed,
        # and its workers) would otherwise take the CPU from Jupyter's own, and delay READY=1.
        PeriodicCallback(self.tick, CHECK_INTERVAL_MS).start()

    def tick(self):
        try:
            if self.dashboard_port:
                self.keep_local_cluster()
            elif (self.scheduler.startswith("tls://")
                  and time.monotonic() - self.remote_checked_at
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
        activity = self.serverapp.config.get("JupyterRemoteIdle", {}).get("activity_file", "")
        # stdout and stderr are Jupyter's own: the daemon logs them behind "[jupyter]".
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


def listened_by_us(port: int, tables: tuple[str, ...] = ("/proc/net/tcp",)) -> bool:
    """Whether a socket of this process's user listens on 127.0.0.1:`port` (/proc/net/tcp lists
    every socket of the network namespace with its owner's uid)."""
    wanted = f"0100007F:{port:04X}"
    uid = str(os.getuid())
    for table in tables:
        try:
            with open(table) as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if fields[1] == wanted and fields[3] == LISTEN and fields[7] == uid:
                        return True
        except OSError:
            continue
    return False


class NoClusterManager(APIHandler):
    """dask-labextension's front end lists the clusters its server part manages, even with the
    manager hidden, and shows an error dialog when nothing answers: none are managed here."""

    @web.authenticated
    def get(self):
        self.finish("[]")


def install(serverapp) -> DaskGate | None:
    """The gate, and the one proxy route that asks it."""
    gate = DaskGate(serverapp)
    if not gate.enabled:
        return None
    from jupyter_server_proxy.handlers import RemoteProxyHandler

    base_url = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(base_url, r"/proxy/([^/:@]+):(\d+)(/.*|)"), RemoteProxyHandler,
         {"absolute_url": False, "host_allowlist": gate.allows}),
        (url_path_join(base_url, "/dask/clusters/?"), NoClusterManager),
    ])
    serverapp.io_loop.add_callback(gate.start)
    return gate
