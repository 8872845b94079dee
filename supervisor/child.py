"""Starting `jupyter lab` as the serving account, and stopping it with everything it started."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from supervisor.accounts import Account
from supervisor.errors import JupyterRemoteError
from supervisor.render import bind_address
from supervisor.settings import Settings

log = logging.getLogger(__name__)

EXTENSION_PATH = Path(__file__).parent / "inside_jupyter"
PRIVILEGED_PORTS = 1024
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def jupyter_executable(settings: Settings) -> Path:
    # The one installed beside jupyter-remote, unless the settings name another (e.g. Anaconda's).
    return Path(settings.server.jupyter) if settings.server.jupyter else Path(sys.executable).parent / "jupyter"


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


def command(settings: Settings, account: Account) -> list[str]:
    jupyter = [str(jupyter_executable(settings)), "lab", *settings.server.extra_args]
    return as_account(account, jupyter, bind_low_ports=settings.server.port < PRIVILEGED_PORTS)


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


def environment(settings: Settings, account: Account, config_dir: Path,
                kernel_env: Path | None = None) -> dict[str, str]:
    """Jupyter's environment: the account's own, Jupyter's paths, and the notebooks' Python first."""
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
    }


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
            return psutil.Process(self.pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
        except psutil.Error:
            return False


def spawn(settings: Settings, account: Account, config_dir: Path, root_dir: Path,
          kernel_env: Path | None = None, pass_fds: tuple[int, ...] = ()) -> Jupyter:
    """`pass_fds`: sockets Jupyter inherits under the same numbers (acme mode's HTTP-01 socket)."""
    argv = command(settings, account)
    executable = jupyter_executable(settings)
    if not os.access(executable, os.X_OK):
        raise JupyterRemoteError(f"cannot run Jupyter: {executable} is not an executable file")
    try:
        process = subprocess.Popen(
            argv, env=environment(settings, account, config_dir, kernel_env), cwd=root_dir,
            stdin=subprocess.DEVNULL, process_group=0, close_fds=True, pass_fds=pass_fds,
        )
    except OSError as error:
        raise JupyterRemoteError(f"cannot run Jupyter ({argv[0]}): {error.strerror}") from None
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


def signal_tree(pids: list[int], number: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, number)
        except ProcessLookupError:
            pass


def descendants() -> list[int]:
    """Every process below the daemon; as a child subreaper it also inherits detached ones."""
    try:
        return [p.pid for p in psutil.Process().children(recursive=True)]
    except psutil.Error:
        return []


def kill_everything(spare: int | None = None) -> None:
    """SIGKILL every process below the daemon, but `spare` and its own, until none is left
    (a fork may race the first pass)."""
    for _ in range(50):
        pids = descendants()
        if spare in pids:
            spared = {spare, *(p.pid for p in _children(spare))}
            pids = [pid for pid in pids if pid not in spared]
        if not pids:
            return
        signal_tree(pids, signal.SIGKILL)
        for pid in pids:  # only these: the spared process's exit is the daemon's to collect
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass  # not our child (yet): once its parent is gone, the next pass reaps it
        time.sleep(0.02)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def reap_all() -> list[tuple[int, int]]:
    """Collect every exited child; returns (pid, wait status) pairs."""
    reaped = []
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

    PR_SET_CHILD_SUBREAPER = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError) as error:
        log.warning("cannot become a child subreaper (%s): detached kernels may outlive a stop", error)


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
