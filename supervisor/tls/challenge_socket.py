"""The daemon's side of HTTP-01 (acme mode): the listening socket Jupyter serves challenges on.

The daemon (root) binds it, so port 80 needs no privilege in Jupyter, and passes it down as an
inherited file descriptor (child.spawn pass_fds); the extension serves on it. Standard library
only: this runs in the resident daemon, which the certificate work (supervisor.tls.acme) must
not weigh down.
"""

from __future__ import annotations

import errno
import socket

from supervisor.errors import JupyterRemoteError
from supervisor.settings import Settings


def bind_http_challenge_socket(settings: Settings) -> socket.socket | None:
    """A listening socket on acme_http_port, or None when HTTP-01 is not wanted.

    Bound once and kept across Jupyter restarts. For "0.0.0.0" and "::" every address of both
    families: the CA may come over IPv6 when the name has an AAAA record.
    """
    tls = settings.tls
    if tls.mode != "acme" or not tls.acme_http_port:
        return None
    ip, port = settings.server.ip, tls.acme_http_port
    try:
        if ip in ("0.0.0.0", "::"):
            try:
                return _listen(socket.AF_INET6, "::", port)
            except OSError as error:
                if error.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    raise
                return _listen(socket.AF_INET, "0.0.0.0", port)  # a machine without IPv6
        return _listen(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip, port)
    except OSError as error:
        raise JupyterRemoteError(
            f"{settings.source}: [tls] acme_http_port: cannot listen on port {port} "
            f"({error.strerror}); set it to 0 to answer only TLS-ALPN-01 on [server] port"
        ) from None


def _listen(family: socket.AddressFamily, address: str, port: int) -> socket.socket:
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and address == "::":
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind((address, port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener
