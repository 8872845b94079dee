"""Running programs as the serving account, and stopping them with everything they started.

Every process of the account starts in a session of its own, with no controlling terminal, stdin
from /dev/null and its output in a pipe that the daemon relays to its log with a prefix. It never
holds the daemon's terminal or journal stream: a notebook could otherwise type into root's shell
(TIOCSTI) or write lines that read as the daemon's own (a forged login failure for fail2ban).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psutil

from supervisor.accounts import Account
from supervisor.render import bind_address
from supervisor.settings import Settings

log = logging.getLogger(__name__)

EXTENSION_PATH = Path(__file__).parent / "inside_jupyter"
PRIVILEGED_PORTS = 1024
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RELAYED_LINE_MAX = 4096  # bytes of one relayed line; a longer one is relayed in pieces
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def jupyter_executable(settings: Settings) -> Path:
    # The one installed beside jupyter-remote, unless the settings name another (e.g. Anaconda's).
    if settings.server.jupyter:
        return Path(settings.server.jupyter)
    return Path(sys.executable).parent / "jupyter"


def as_account(account: Account, argv: list[str], *, bind_low_ports: bool = False) -> list[str]:
    """`argv` run as `account`: setpriv (util-linux, on every Debian) drops to it when we are root
    and, for a port below 1024, hands over the one capability needed; --pdeathsig stops the
    process if the daemon dies."""
    wrapper = ["setpriv", "--pdeathsig=TERM"]
    if os.geteuid() == 0:
        wrapper += [f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups"]
        if bind_low_ports:
            wrapper += ["--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]
    return [*wrapper, "--", *argv]


def account_environment(account: Account, path: str = PATH) -> dict[str, str]:
    """What a login gives the account, and nothing of ours: no secret can leak through it."""
    return {
        "HOME": str(account.home),
        "USER": account.name,
        "LOGNAME": account.name,
        "SHELL": "/bin/bash",
        "PATH": path,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }


def jupyter_environment(settings: Settings, account: Account, config_dir: Path,
                        kernel_env: Path | None = None,
                        extra: dict[str, str] | None = None) -> dict[str, str]:
    """Jupyter's environment: the account's own, Jupyter's paths, the notebooks' Python first;
    `extra`: variables of ours for Jupyter and its kernels (no secret: notebooks read them)."""
    home = account.home
    path = f"{jupyter_executable(settings).parent}:{PATH}"
    data_path = str(config_dir / "data")  # our kernelspec: the default "Python 3"
    if kernel_env:
        # Terminals then find the notebooks' python and pip; widgets installed there are served.
        path = f"{kernel_env / 'bin'}:{path}"
        data_path += f":{kernel_env / 'share' / 'jupyter'}"
    return {
        **account_environment(account, path),
        # Our config folder replaces ~/.jupyter, so a stray file there cannot weaken the password,
        # TLS, XSRF or port settings; the user's JupyterLab settings stay where they are.
        "JUPYTER_CONFIG_DIR": str(config_dir),
        "JUPYTER_PATH": data_path,
        "JUPYTERLAB_SETTINGS_DIR": str(home / ".jupyter" / "lab" / "user-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / ".jupyter" / "lab" / "workspaces"),
        # Makes the extension importable in any Jupyter; it removes this from its own environment.
        "PYTHONPATH": str(EXTENSION_PATH),
        **(extra or {}),
    }


def start(argv: list[str], env: dict[str, str], label: str,
          pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    """Start `argv` (already wrapped by as_account) detached from our session and stdio; its
    output is relayed to our log, each line behind `[label]`. Raises OSError."""
    process = subprocess.Popen(
        argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, pass_fds=pass_fds,
    )
    assert process.stdout is not None
    relay = threading.Thread(target=_relay, args=(process.stdout, label), daemon=True,
                             name=f"relay-{label}-{process.pid}")
    relay.start()
    return process


def run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `argv` (wrapped by as_account) to its end, detached as `start` does; output captured."""
    return subprocess.run(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True, close_fds=True)


def _relay(stream: BinaryIO, label: str) -> None:
    """Copy a child's output to our stderr, a line at a time behind `[label] `, control characters
    shown escaped: nothing a notebook prints reads as a line of ours or drives our terminal.

    os.write, not sys.stderr: a lock held here at the moment the daemon forks a worker would stay
    locked in the worker forever."""
    with stream:
        # A line longer than this arrives in pieces, each a line: memory stays bounded.
        for raw in iter(lambda: stream.readline(RELAYED_LINE_MAX), b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            line = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", line)
            try:
                os.write(2, f"[{label}] {line}\n".encode("utf-8", "replace"))
            except OSError:
                return  # our stderr is gone: draining on would only spin


@dataclass
class Jupyter:
    process: subprocess.Popen[bytes]
    started: float  # time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float | None:
        try:
            times = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return None
        return times.user + times.system

    def is_stopped(self) -> bool:
        try:
            status = psutil.Process(self.pid).status()
        except psutil.Error:
            return False
        return status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)


def spawn_jupyter(settings: Settings, account: Account, config_dir: Path,
                  kernel_env: Path | None = None, pass_fds: tuple[int, ...] = (),
                  extra: dict[str, str] | None = None) -> Jupyter:
    """`jupyter lab` as the account; raises OSError when it cannot be run at all. It starts in "/":
    root_dir is the account's to change, and Jupyter reads it from its config. `pass_fds`: sockets
    Jupyter inherits under the same numbers (acme mode's HTTP-01 socket)."""
    jupyter = [str(jupyter_executable(settings)), "lab", *settings.server.extra_args]
    argv = as_account(account, jupyter, bind_low_ports=settings.server.port < PRIVILEGED_PORTS)
    process = start(argv, jupyter_environment(settings, account, config_dir, kernel_env, extra),
                    "jupyter", pass_fds)
    log.info("Jupyter started as %s, pid %s", account.name, process.pid)
    return Jupyter(process, time.monotonic())


def port_in_use(settings: Settings) -> bool:
    """Whether another program holds the port: tried before each start, for a clear message."""
    address = bind_address(settings.server.ip) or "::"
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, settings.server.port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def process_tree(pid: int | None = None) -> list[psutil.Process]:
    """Every process below `pid` (default: us; a child subreaper also inherits detached ones)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def send_signal(pids: list[int], number: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, number)
        except ProcessLookupError:
            pass


def kill_everything(spare: int | None = None) -> None:
    """SIGKILL every process below the daemon, but `spare` and its own, until none is left
    (a fork may race the first pass)."""
    for _ in range(50):
        pids = [p.pid for p in process_tree()]
        if spare in pids:
            spared = {spare, *(p.pid for p in process_tree(spare))}
            pids = [pid for pid in pids if pid not in spared]
        if not pids:
            return
        send_signal(pids, signal.SIGKILL)
        for pid in pids:  # only these: the spared process's exit is the daemon's to collect
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass  # not our child (yet): once its parent is gone, the next pass reaps it
        time.sleep(0.02)


def reap_all() -> list[tuple[int, int]]:
    """Collect every exited child; returns (pid, wait status) pairs."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def become_subreaper() -> None:
    """Orphaned kernels (they run in sessions of their own) then become our children, not init's."""
    import ctypes

    pr_set_child_subreaper = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    except (OSError, AttributeError) as error:
        log.warning("cannot become a child subreaper (%s): detached kernels may outlive a stop",
                    error)


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
