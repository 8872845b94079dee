"""jupyter-remote's server extension: the part of jupyter-remote that runs inside Jupyter.

- live.py: TLS from one in-memory ``ssl.SSLContext``, swapped when the live certificate changes and
  only once the new key and certificate load and match (tornado, given file paths, re-reads them for
  every connection and hangs a client that catches a half-replaced pair); and the password, rate
  limit and idle-kernel culling, changed without a restart from a file the daemon writes (Jupyter
  has no SIGHUP handler: a HUP would kill it).
- login.py: logins limited per client address, checked off the event loop, each attempt reported
  to the daemon (which writes the login lines fail2ban reads).
- guard.py: connections limited per client address and timed out until they authenticate, before
  the TLS handshake, so that idle connections cannot take every descriptor.
- activity.py: a user's activity, for the daemon's idle stop, and its warning, for JupyterLab.
- acme_answer.py: acme mode: answers the CA's TLS-ALPN-01 challenges in the live TLS context and
  HTTP-01 challenges on a socket the daemon binds and passes down.
- static.py: JupyterLab's static files gzip-compressed once, for browsers that offer gzip.
- dask_gate.py: [dask]: the local cluster, and the gate that lets jupyter-server-proxy reach the
  Dask dashboard alone, without the login's cookie.

It imports only the standard library, tornado, traitlets and jupyter_server, so it loads into any
Jupyter Server 2, a user's own Anaconda included (``[server] jupyter``).
"""

import os

from .activity import ActivityTracker
from .guard import SETTINGS_KEY, ConnectionGuard
from .acme_answer import AcmeAnswers, AcmeChallenges
from . import dask_gate, static
from .live import LiveWatcher, build_tls_context
from .login import RemoteIdentityProvider

__all__ = ["RemoteIdentityProvider", "build_tls_context"]


def _jupyter_server_extension_points():
    return [{"module": "jupyter_remote_ext"}]


def _load_jupyter_server_extension(serverapp):
    # The daemon put this module on PYTHONPATH; kernels and terminals must not inherit that.
    os.environ.pop("PYTHONPATH", None)
    # First: jupyter_server_proxy, loaded after this extension, reads its gate from the config.
    dask_gate.install(serverapp)
    watcher = LiveWatcher(serverapp)
    challenges = AcmeChallenges(parent=serverapp)
    if challenges.folder:
        watcher.acme = AcmeAnswers(serverapp, challenges.folder)
        if challenges.http_fd >= 0:
            serverapp.io_loop.add_callback(watcher.acme.start_http, challenges.http_fd)
    # The HTTP server does not exist yet while extensions load: start once the loop runs, which is
    # before Jupyter binds its sockets (its own callback for that is queued after these).
    serverapp.io_loop.add_callback(_guard_connections, serverapp)
    serverapp.io_loop.add_callback(watcher.start)
    idle = serverapp.config.get("JupyterRemoteIdle", {})
    if idle.get("activity_file"):
        tracker = ActivityTracker(serverapp, idle["activity_file"], idle["notice_file"])
        tracker.install()
        serverapp.io_loop.add_callback(tracker.start)
    # JupyterLab adds its static routes after this extension loads (alphabetical order).
    serverapp.io_loop.add_callback(static.start, serverapp)
    # No jpserver-...-open.html: a file on a remote server opens nothing. The trait is not
    # configurable, so it is set here, before the server starts.
    serverapp.no_browser_open_file = True
    serverapp.log.addFilter(_without_access_hint)


def _without_access_hint(record):
    """Drop Jupyter's "To access the server, open this file in a browser: file:///... or copy and
    paste one of these URLs" block: its URLs are a file on the server and the machine's host name
    (on AWS an internal ip-172-31-... name); the daemon logs the URL users open."""
    message = record.getMessage()
    return "To access the server" not in message and "-open.html" not in message


def _guard_connections(serverapp):
    guard = ConnectionGuard(serverapp.http_server, serverapp.log,
                            per_address=bool(serverapp.certfile))
    guard.install()
    serverapp.web_app.settings[SETTINGS_KEY] = guard
