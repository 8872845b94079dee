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

It imports only the standard library, tornado, traitlets and jupyter_server, so it loads into any
Jupyter Server 2, a user's own Anaconda included (``[server] jupyter``).
"""

import os

from .guard import SETTINGS_KEY, ConnectionGuard
from .live import LiveWatcher, build_tls_context
from .login import RemoteIdentityProvider

__all__ = ["RemoteIdentityProvider", "build_tls_context"]


def _jupyter_server_extension_points():
    return [{"module": "jupyter_remote_ext"}]


def _load_jupyter_server_extension(serverapp):
    # The daemon put this module on PYTHONPATH; kernels and terminals must not inherit that.
    os.environ.pop("PYTHONPATH", None)
    watcher = LiveWatcher(serverapp)
    # The HTTP server does not exist yet while extensions load: start once the loop runs, which is
    # before Jupyter binds its sockets (its own callback for that is queued after these).
    serverapp.io_loop.add_callback(_guard_connections, serverapp)
    serverapp.io_loop.add_callback(watcher.start)


def _guard_connections(serverapp):
    guard = ConnectionGuard(serverapp.http_server, serverapp.log,
                            per_address=bool(serverapp.certfile))
    guard.install()
    serverapp.web_app.settings[SETTINGS_KEY] = guard
