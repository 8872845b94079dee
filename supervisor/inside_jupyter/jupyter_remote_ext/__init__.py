"""jupyter-remote's server extension: the part of jupyter-remote that runs inside Jupyter.

- live.py: TLS from one in-memory ``ssl.SSLContext``, swapped when the live certificate changes and
  only once the new key and certificate load and match (tornado, given file paths, re-reads them for
  every connection and hangs a client that catches a half-replaced pair); and the password, rate
  limit and idle-kernel culling, changed without a restart from a file the daemon writes (Jupyter
  has no SIGHUP handler: a HUP would kill it).
- login.py: logins limited per client address, checked off the event loop, one log line each.
- acme_answer.py: acme mode: answers the CA's TLS-ALPN-01 challenges in the live TLS context and
  HTTP-01 challenges on a socket the daemon binds and passes down.

It imports only the standard library, tornado, traitlets and jupyter_server, so it loads into any
Jupyter Server 2, a user's own Anaconda included (``[server] jupyter``).
"""

import os

from .acme_answer import AcmeAnswers, AcmeChallenges
from .live import LiveWatcher, build_tls_context
from .login import RemoteIdentityProvider

__all__ = ["RemoteIdentityProvider", "build_tls_context"]


def _jupyter_server_extension_points():
    return [{"module": "jupyter_remote_ext"}]


def _load_jupyter_server_extension(serverapp):
    # The daemon put this module on PYTHONPATH; kernels and terminals must not inherit that.
    os.environ.pop("PYTHONPATH", None)
    watcher = LiveWatcher(serverapp)
    challenges = AcmeChallenges(parent=serverapp)
    if challenges.folder:
        watcher.acme = AcmeAnswers(serverapp, challenges.folder)
        if challenges.http_fd >= 0:
            serverapp.io_loop.add_callback(watcher.acme.start_http, challenges.http_fd)
    # The HTTP server does not exist yet while extensions load: start once the loop runs.
    serverapp.io_loop.add_callback(watcher.start)
