"""jupyter-remote's server extension: the part of jupyter-remote that runs inside Jupyter.

- live.py: TLS from one in-memory ``ssl.SSLContext``, swapped when the live certificate changes and
  only once the new key and certificate load and match (tornado, given file paths, re-reads them for
  every connection and hangs a client that catches a half-replaced pair); and the password, rate
  limit and idle-kernel culling, changed without a restart from a file the daemon writes (Jupyter
  has no SIGHUP handler: a HUP would kill it).
- login.py: logins limited per client address, checked off the event loop, one log line each.
- static.py: JupyterLab's static files gzip-compressed once, for browsers that offer gzip.

It imports only the standard library, tornado, traitlets and jupyter_server, so it loads into any
Jupyter Server 2, a user's own Anaconda included (``[server] jupyter``).
"""

import os

from . import static
from .live import LiveWatcher, build_tls_context
from .login import RemoteIdentityProvider

__all__ = ["RemoteIdentityProvider", "build_tls_context"]


def _jupyter_server_extension_points():
    return [{"module": "jupyter_remote_ext"}]


def _load_jupyter_server_extension(serverapp):
    # The daemon put this module on PYTHONPATH; kernels and terminals must not inherit that.
    os.environ.pop("PYTHONPATH", None)
    watcher = LiveWatcher(serverapp)
    # The HTTP server does not exist yet while extensions load: start once the loop runs.
    serverapp.io_loop.add_callback(watcher.start)
    # JupyterLab adds its static routes after this extension loads (alphabetical order).
    serverapp.io_loop.add_callback(static.start, serverapp)
