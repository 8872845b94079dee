"""A notebook is hostile code running as the account: it must not reach the daemon's terminal or
log stream, and what it does to its own folders must not make the daemon (root) fail."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import shutil
import subprocess
import tempfile
import termios
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import Serving, settings_port
from support import JUPYTER_REMOTE, NotifyListener, cli, stop_tree, wait_until

PROBE = """
import errno, json, os
try:
    os.close(os.open("/dev/tty", os.O_RDWR))
    tty = "opened"
except OSError as error:
    tty = errno.errorcode[error.errno]
fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
print(json.dumps({"tty": tty, "sid": os.getsid(0), "fds": fds}))
"""


@pytest.mark.jupyter
def test_notebooks_never_hold_the_terminal_or_stdio_the_daemon_was_started_from(
        make_settings, folder, account):
    """`sudo jupyter-remote run` from a root shell: a kernel must not be able to type into that
    shell (TIOCSTI needs the terminal as its controlling one, or a descriptor of it)."""
    settings = make_settings()
    port = settings_port(settings)
    master, slave = os.openpty()
    terminal = os.ttyname(slave)
    listener = NotifyListener(folder)
    drained: list[bytes] = []

    def drain() -> None:  # the daemon's output must not block on a full pty
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            drained.append(chunk)

    def controlling_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env["NOTIFY_SOCKET"] = str(listener.path)
    daemon = subprocess.Popen([JUPYTER_REMOTE, "run", "--settings", str(settings)], env=env,
                              stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                              preexec_fn=controlling_terminal)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        listener.wait_for("READY=1", 90)
        serving = Serving(None, settings, folder, port)  # type: ignore[arg-type]
        client = serving.logged_in_client()
        kernel = client.kernel(client.start_kernel())
        seen = json.loads(kernel.execute(PROBE))
        kernel.close()
        assert seen["tty"] == "ENXIO"  # no controlling terminal at all
        assert seen["sid"] != os.getsid(daemon.pid)
        assert terminal not in seen["fds"].values()
        assert not any(target.startswith("/dev/pts/") for target in seen["fds"].values())
        for process in psutil.Process(daemon.pid).children(recursive=True):
            if process.uids().real == account.uid:
                assert process.terminal() is None, process.cmdline()
    finally:
        stop_tree(daemon, 30)
        listener.close()
        os.close(slave)
        os.close(master)


def test_what_a_notebook_prints_reaches_the_log_behind_a_prefix(serving):
    """A kernel writing a line in the daemon's own form cannot make it look like the daemon's."""
    client = serving.logged_in_client()
    kernel = client.kernel(client.start_kernel())
    forged = "WARNING jupyter-remote: login failed from 192.0.2.77"
    kernel.execute(f"import os\nos.write(2, b'{forged}\\n')\nos.write(1, b'\\x1b]0;owned\\x07\\n')")
    kernel.close()
    wait_until(lambda: "192.0.2.77" in serving.daemon.log(), 20, "the kernel's line relayed")
    lines = serving.daemon.log().splitlines()
    relayed = [line for line in lines if "192.0.2.77" in line]
    assert relayed and all(line.startswith("[jupyter] ") for line in relayed)
    assert not any(line.endswith(forged) and not line.startswith("[") for line in lines)
    assert "\x1b" not in serving.daemon.log()  # a terminal escape arrives escaped, not raw


def test_root_dir_renamed_under_a_restart_never_ends_the_daemon(serving, account):
    """The account renames root_dir back and forth while killing its own Jupyter: the daemon
    backs off and serves again; it never exits."""
    root = Path(serving.folder / "notebooks")
    aside = root.with_name("notebooks-aside")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        pid = serving.daemon.status()["jupyter_pid"]
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in range(20):
            try:
                os.rename(root, aside)
                os.rename(aside, root)
            except OSError as error:
                assert error.errno == errno.ENOENT
        assert serving.daemon.process.poll() is None, serving.daemon.log()[-2000:]
    if not root.exists():
        os.rename(aside, root)
    ready = serving.daemon.notify.count("READY=1")
    serving.daemon.wait_ready(timeout=120, after=ready - 1)
    wait_until(lambda: serving.daemon.status()["state"] == "running", 120, "serving again")
    assert serving.daemon.process.poll() is None


def test_scripts_refuse_a_development_folder_another_user_could_have_made(account):
    """scripts/run and scripts/test as root: a folder another user made, or may write, is never
    used (a planted bin/pip would run as root)."""
    if os.geteuid() != 0:
        pytest.skip("the scripts trust only root-owned folders when run as root")
    repo = Path(__file__).resolve().parent.parent
    parent = Path(tempfile.mkdtemp(prefix="jr-trust-", dir="/var/lib"))  # root's, 0700

    def accepted(folder: Path) -> bool:
        result = subprocess.run(["sh", "-c", f'. scripts/environment.sh; require_root_owned "{folder}"'],
                                cwd=repo, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 or "refusing" in result.stderr
        return result.returncode == 0

    try:
        good = parent / "good"
        good.mkdir(mode=0o755)
        assert accepted(good)
        planted = parent / "planted"
        planted.mkdir()
        os.chown(planted, account.uid, -1)
        assert not accepted(planted) and not accepted(planted / "venv-test")
        open_to_all = parent / "open"
        open_to_all.mkdir()
        open_to_all.chmod(0o777)
        assert not accepted(open_to_all)
        assert not accepted(Path("/tmp/jr-not-made-yet"))  # /tmp: anyone may make it first
    finally:
        shutil.rmtree(parent)


def test_root_refuses_paths_the_account_could_replace(make_settings, folder, account):
    """Files mode with certbot's pair in a folder the account owns: swapped for symlinks to a
    root-only key, root would copy that key where the account reads it. Refused, key named."""
    if os.geteuid() != 0:
        pytest.skip("only root must distrust other users' folders")
    theirs = folder / "theirs"
    theirs.mkdir()
    os.chown(theirs, account.uid, account.gid)
    (theirs / "fullchain.pem").write_text("")
    (theirs / "privkey.pem").symlink_to("/etc/shadow")
    settings = make_settings(tls={"mode": "files", "cert_file": str(theirs / "fullchain.pem"),
                                  "key_file": str(theirs / "privkey.pem")})
    result = cli("check", "--settings", str(settings))
    assert result.returncode == 78
    assert "[tls] cert_file: refused" in result.stderr and "[tls] key_file: refused" in result.stderr
    assert f"{theirs} belongs to {account.name}" in result.stderr

    # A state folder below one the account owns: it could plant `tls` as a symlink.
    settings = make_settings(paths={"state_dir": str(theirs / "state"),
                                    "runtime_dir": str(folder / "run")})
    result = cli("check", "--settings", str(settings))
    assert result.returncode == 78 and "[paths] state_dir: refused" in result.stderr

    # A runtime folder anyone may make first (in /tmp, not made yet).
    settings = make_settings(paths={"state_dir": str(folder / "state"),
                                    "runtime_dir": f"/tmp/jr-not-made-{os.getpid()}"})
    result = cli("check", "--settings", str(settings))
    assert result.returncode == 78 and "[paths] runtime_dir: refused" in result.stderr
    assert "could make" in result.stderr

    # The same folders, root's: accepted.
    theirs.chmod(0o755)
    os.chown(theirs, 0, 0)
    settings = make_settings(paths={"state_dir": str(theirs / "state"),
                                    "runtime_dir": str(folder / "run")})
    assert cli("check", "--settings", str(settings)).returncode == 0


def test_a_notebook_cannot_report_a_login_failure_to_the_daemon(serving):
    """The events socket is reachable by the account, but the daemon keeps only what Jupyter's own
    process sends: a kernel's forged events leave no login line, so fail2ban bans nobody."""
    client = serving.logged_in_client()
    kernel = client.kernel(client.start_kernel())
    sock_path = serving.folder / "run" / "jupyter" / "events.sock"
    forged = '{"event": "login", "outcome": "failed", "address": "192.0.2.88"}'
    sent = kernel.execute(
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        f"for _ in range(25):\n    s.sendto({forged!r}.encode(), {str(sock_path)!r})\n"
        "print('sent')")
    kernel.close()
    assert sent.strip() == "sent"  # the socket is reachable: the pid check is what stops it
    assert client.login("a wrong password").status_code == 401  # a real one, for comparison
    wait_until(lambda: "login failed from 127.0.0.1" in serving.daemon.log(), 20,
               "the real failure logged")
    assert "192.0.2.88" not in serving.daemon.log()
