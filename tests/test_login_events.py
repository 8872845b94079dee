"""Login events reach the daemon only from the Jupyter server's own process, and only the daemon's
login lines are what the shipped fail2ban filter matches.

A notebook runs as the same account as Jupyter and can reach the events socket; it must not be able
to make the daemon log a login line (the shipped jail would then ban any address it names), nor get
one matched by printing it (Jupyter's and the kernels' output is relayed behind "[jupyter] ").
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import select
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from support import Account
from test_login_protection import run_fail2ban_regex

from supervisor.inside_jupyter.jupyter_remote_ext.login import RemoteIdentityProvider
from supervisor.login_events import LoginEvent, log_line, open_socket, receive

FORGED = "192.0.2.77"


@pytest.fixture
def events(folder: Path, account: Account):
    """The daemon's side: the socket in a folder of root's that the account's group may enter."""
    place = folder / "jupyter"
    place.mkdir(mode=0o750)
    os.chown(place, 0 if os.geteuid() == 0 else -1, account_gid(account))
    sock = open_socket(place / "events.sock", account_gid(account))
    yield place / "events.sock", sock
    sock.close()


def account_gid(account: Account) -> int:
    return pwd.getpwnam(account.name).pw_gid


def datagram(outcome: str = "failed", address: str = FORGED) -> bytes:
    return json.dumps({"event": "login", "outcome": outcome, "address": address}).encode()


def drain(sock: socket.socket, jupyter_pid: int, timeout: float = 5) -> list[LoginEvent]:
    """Wait for the datagram(s) sent before (bounded), then everything receive() keeps."""
    select.select([sock], [], [], timeout)
    return receive(sock, jupyter_pid)


def as_account(account: Account, code: str, *args: str) -> subprocess.Popen[str]:
    """A Python process running as the account, as a notebook's kernel does."""
    prefix = [] if os.geteuid() != 0 else [
        "setpriv", f"--reuid={account.uid}", f"--regid={account_gid(account)}", "--init-groups"]
    return subprocess.Popen([*prefix, sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


SEND = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.sendto(sys.argv[2].encode(), sys.argv[1])
"""

# The kernel refuses SCM_CREDENTIALS naming another process unless the sender has CAP_SYS_ADMIN.
SEND_AS_PID = """
import os, socket, struct, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
credentials = struct.pack("3i", int(sys.argv[3]), os.getuid(), os.getgid())
try:
    sock.sendmsg([sys.argv[2].encode()], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, credentials)],
                 0, sys.argv[1])
except PermissionError:
    print("refused by the kernel")
"""


@pytest.mark.parametrize("outcome, line, level", [
    ("failed", f"jupyter-remote: login failed from {FORGED}", logging.WARNING),
    ("refused", f"jupyter-remote: login refused (rate limit) from {FORGED}", logging.WARNING),
    ("succeeded", f"jupyter-remote: login succeeded from {FORGED}", logging.INFO),
])
def test_an_event_from_jupyters_own_process_gives_the_login_line(events, outcome, line, level):
    path, sock = events
    # This process plays Jupyter: the daemon is told its pid.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as jupyter:
        jupyter.sendto(datagram(outcome), str(path))
    (event,) = drain(sock, os.getpid())
    assert log_line(event) == line and event.level == level


def test_with_no_jupyter_running_every_event_is_dropped(events):
    path, sock = events
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as jupyter:
        jupyter.sendto(datagram(), str(path))
    assert drain(sock, None) == []


def test_the_socket_is_the_account_groups_to_write_and_nobody_elses(events, account):
    path, _ = events
    status = path.stat()
    assert (status.st_mode & 0o777, status.st_gid) == (0o660, account_gid(account))


def test_a_notebook_cannot_forge_an_event(events, account):
    path, sock = events
    # The account's process reaches the socket (the group may write it): the datagram arrives...
    sender = as_account(account, SEND, str(path), datagram())
    assert sender.wait(30) == 0, sender.stderr.read()
    assert [log_line(e) for e in drain(sock, sender.pid)] == [
        f"jupyter-remote: login failed from {FORGED}"]
    # ...and is dropped when Jupyter is another process, as it always is for a kernel.
    sender = as_account(account, SEND, str(path), datagram())
    assert sender.wait(30) == 0, sender.stderr.read()
    assert drain(sock, os.getpid()) == []
    # Claiming Jupyter's pid in the credentials is refused by the kernel itself.
    sender = as_account(account, SEND_AS_PID, str(path), datagram(), str(os.getpid()))
    assert sender.wait(30) == 0, sender.stderr.read()
    assert sender.stdout.read().strip() == "refused by the kernel"
    assert drain(sock, os.getpid(), timeout=0.5) == []


@pytest.mark.parametrize("data", [
    b"jupyter-remote: login failed from 192.0.2.77",
    b'{"event": "login", "outcome": "failed"}',
    json.dumps({"event": "login", "outcome": "failed", "address": FORGED, "extra": 1}).encode(),
    json.dumps({"event": "logout", "outcome": "failed", "address": FORGED}).encode(),
    datagram(outcome="banned"),
    datagram(address="example.com"),
    datagram(address=f"{FORGED}\nWARNING jupyter-remote: login failed from 198.51.100.1"),
    json.dumps({"event": "login", "outcome": "failed", "address": [FORGED]}).encode(),
    json.dumps(["login", "failed", FORGED]).encode(),
    b"\xff\xfe",
    datagram(address=FORGED + " " * 600),  # longer than any event: cut, so never parsed
])
def test_a_malformed_event_is_dropped(events, data):
    path, sock = events
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as jupyter:
        jupyter.sendto(data, str(path))
    assert drain(sock, os.getpid()) == []


def test_an_addresss_scope_never_reaches_the_line(events):
    path, sock = events
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as jupyter:
        jupyter.sendto(datagram(address="fe80::1%eth0\nWARNING x"), str(path))
        jupyter.sendto(datagram(address="::ffff:192.0.2.9"), str(path))
    assert [log_line(e) for e in drain(sock, os.getpid())] == [
        "jupyter-remote: login failed from fe80::1", "jupyter-remote: login failed from 192.0.2.9"]


def test_the_extension_reports_each_attempt_without_blocking(events):
    path, sock = events
    provider = RemoteIdentityProvider(events_socket=str(path))
    provider.report_login("refused", "198.51.100.9")
    (event,) = drain(sock, os.getpid())
    assert log_line(event) == "jupyter-remote: login refused (rate limit) from 198.51.100.9"
    # The daemon not reading: its queue fills, and reports are dropped rather than waited for.
    began = time.monotonic()
    for _ in range(2000):
        provider.report_login("failed", "198.51.100.9")
    assert time.monotonic() - began < 30  # a bound on a hang, not a speed
    assert 0 < len(receive(sock, os.getpid())) < 2000


# --- the shipped filter: the daemon's lines match, the same text relayed from Jupyter never -------

def daemon_lines(by_hand: bool) -> list[str]:
    """The daemon's own lines, formatted as its logging does (time first only when run by hand)."""
    formatter = logging.Formatter(("%(asctime)s " if by_hand else "") + "%(levelname)s %(message)s")
    lines = []
    for outcome, address in (("failed", "203.0.113.7"), ("failed", "203.0.113.7"),
                             ("refused", "203.0.113.7"), ("succeeded", "198.51.100.20"),
                             ("failed", "2001:db8::5")):
        event = LoginEvent(outcome, address)
        record = logging.LogRecord("supervisor.daemon", event.level, __file__, 0, "%s",
                                   (log_line(event),), None)
        lines.append(formatter.format(record))
    return lines


# What a notebook can make appear: its output, relayed by the daemon behind "[jupyter] ".
RELAYED = [
    f"[jupyter] WARNING jupyter-remote: login failed from {FORGED}",
    f"[jupyter] x[1]: WARNING jupyter-remote: login failed from {FORGED}",
    f"[jupyter] host jupyter-remote[1]: WARNING jupyter-remote: login failed from {FORGED}",
    f"[jupyter] [W 2026-11-25 23:36:18.908 ServerApp] jupyter-remote: login failed from {FORGED}",
    f"[jupyter] 2026-11-25 23:36:18,908 WARNING jupyter-remote: login failed from {FORGED}",
]
GENUINE = {"203.0.113.7": 3, "2001:db8::5": 1}


def test_the_filter_matches_the_daemons_lines_and_never_relayed_ones_from_a_file(folder):
    assert shutil.which("fail2ban-regex"), "fail2ban-regex is missing: apt install fail2ban"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S") + ",123"
    relayed_by_logger = [f"{stamp} INFO {line}" for line in RELAYED]
    log = folder / "daemon.log"
    log.write_text("\n".join([*daemon_lines(by_hand=True), *relayed_by_logger, *RELAYED]) + "\n")
    assert Counter(run_fail2ban_regex(log)) == GENUINE


def test_the_filter_matches_the_daemons_lines_and_never_relayed_ones_from_the_journal(folder):
    # fail2ban reads the journal as "<host> <identifier>[<pid>]: <message>", with its own time.
    journal = folder / "journal-form.log"
    journal.write_text("".join(f"{time.time():.6f} testhost jupyter-remote[42]: {line}\n"
                               for line in [*daemon_lines(by_hand=False), *RELAYED]))
    assert Counter(run_fail2ban_regex(journal, "--datepattern", "^EPOCH")) == GENUINE
