"""Login events from Jupyter to the daemon, over a channel notebooks cannot forge.

The login lines fail2ban acts on ("jupyter-remote: login failed from <address>") are written by the
daemon alone. Everything Jupyter and its kernels print reaches the log behind a prefix the filter
excludes, so a notebook printing such a line bans nobody. The extension reports each login attempt
as one datagram on a unix socket; the kernel stamps every datagram with the sender's pid
(SCM_CREDENTIALS), which an unprivileged sender cannot choose, and the daemon keeps only those whose
pid is the Jupyter server's own. A kernel or a terminal runs as the same account and can reach the
socket, but it has another pid.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

OUTCOMES = {
    "failed": "login failed",
    "refused": "login refused (rate limit)",
    "succeeded": "login succeeded",
}
MAX_DATAGRAM = 512  # a real event is under 120 bytes; anything longer is not one
MAX_PER_CALL = 1000  # a flood from a kernel cannot keep the daemon's loop in receive()
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class LoginEvent:
    outcome: str  # one of OUTCOMES
    address: str  # the client's IP address, normalised

    @property
    def level(self) -> int:
        return logging.INFO if self.outcome == "succeeded" else logging.WARNING


def open_socket(path: Path, account_gid: int) -> socket.socket:
    """Bind the events socket at `path` (in a folder of root's), writable by the account's group."""
    kind = socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        path.unlink(missing_ok=True)  # a socket left by an earlier run
        sock.bind(str(path))
        # The folder is root's: nobody else can swap the path between bind and these two.
        os.chown(path, 0 if os.geteuid() == 0 else -1, account_gid)
        os.chmod(path, 0o660)
    except BaseException:
        sock.close()
        raise
    return sock


def receive(sock: socket.socket, jupyter_pid: int | None) -> list[LoginEvent]:
    """Every datagram waiting (up to MAX_PER_CALL) that Jupyter itself sent and that is an event.

    With no Jupyter running (`jupyter_pid` None), every datagram is dropped. The kernel reports pid
    0 for a sender it cannot name in our pid namespace: never a Jupyter we started.
    """
    events = []
    for _ in range(MAX_PER_CALL):
        try:
            data, ancillary, flags, _ = sock.recvmsg(MAX_DATAGRAM, socket.CMSG_SPACE(_UCRED.size))
        except (BlockingIOError, InterruptedError):
            break
        sender = _sender_pid(ancillary)
        if jupyter_pid is None or not sender or sender != jupyter_pid:
            logger.debug("login event dropped: sent by pid %s, not Jupyter (%s)",
                         sender, jupyter_pid)
            continue
        event = None if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) else parse(data)
        if event is None:
            logger.debug("login event dropped: malformed")
            continue
        events.append(event)
    return events


def _sender_pid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        credentials = level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
        if credentials and len(data) >= _UCRED.size:
            return _UCRED.unpack_from(data)[0]
    return None


def parse(data: bytes) -> LoginEvent | None:
    """`{"event": "login", "outcome": ..., "address": ...}` and nothing else, or None."""
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(message, dict) or set(message) != {"event", "outcome", "address"}:
        return None
    outcome, address = message["outcome"], message["address"]
    if message["event"] != "login" or not isinstance(outcome, str) or outcome not in OUTCOMES:
        return None
    if not isinstance(address, str):
        return None
    try:
        # The scope of a link-local IPv6 address may hold any text (a newline too): never kept.
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped:  # an IPv4 client of a dual-stack socket: ban its IPv4
        ip = ip.ipv4_mapped
    # Normalised: what reaches the log is an address ipaddress printed, never the sender's text.
    return LoginEvent(outcome, str(ip))


def log_line(event: LoginEvent) -> str:
    """The line etc/fail2ban/filter.d/jupyter-remote.conf matches (failed and refused ones)."""
    return f"jupyter-remote: {OUTCOMES[event.outcome]} from {event.address}"
