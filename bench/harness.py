"""Shared parts of the benchmarks: one throwaway account, the servers compared (our daemon, bare
`jupyter lab` with a hand-written config, supervisord running that same `jupyter lab`), fresh TLS
requests, and readings from /proc.

Every server listens on 127.0.0.1 only; every process started here is stopped by pid.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pwd
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

# The test harness's real parts: notify socket, daemon process, login form and kernel websocket.
from support import (  # noqa: E402 - importable once tests/ is on sys.path, above
    Account,
    DaemonProcess,
    JupyterClient,
    free_port,
    make_account,
    open_folder,
    process_tree,
    remove_account,
    settings_text,
    stop_tree,
    wait_until,  # noqa: F401 - for the benchmarks
)

BIN = Path(sys.executable).parent  # jupyter and jupyter-remote of the environment under test
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 90.0


# --- statistics ----------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- one fresh TLS request ----------------------------------------------------------------------


def client_context(ca: Path) -> ssl.SSLContext:
    """A browser's view: verifies the chain against the local CA and the name 127.0.0.1."""
    context = ssl.create_default_context(cafile=str(ca))
    return context


@dataclass
class Reply:
    ok: bool
    seconds: float
    error: str = ""  # "" | "timeout" | the exception's name
    fingerprint: str = ""


def fresh_request(port: int, context: ssl.SSLContext, timeout: float = 5.0, path: str = "/api",
                  host: str = "127.0.0.1") -> Reply:
    """TCP connect + TLS handshake + GET, on a new connection every time (no session resumption)."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    began = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            fingerprint = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
            tls.sendall(request)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        ok = data.startswith(b"HTTP/1.1 200")
        return Reply(ok, time.perf_counter() - began, "" if ok else f"HTTP {data[9:12].decode(errors='replace')}",
                     fingerprint)
    except TimeoutError:
        return Reply(False, time.perf_counter() - began, "timeout")
    except (OSError, ssl.SSLError) as error:
        return Reply(False, time.perf_counter() - began, type(error).__name__)


def first_answer(port: int, context: ssl.SSLContext, until: float, interval: float = 0.005,
                 host: str = "127.0.0.1") -> float | None:
    """Polls /api every `interval` s; the monotonic time of the first 200, or None by `until`."""
    while time.monotonic() < until:
        if fresh_request(port, context, timeout=2.0, host=host).ok:
            return time.monotonic()
        time.sleep(interval)
    return None


class FirstAnswerWatch:
    """first_answer() on a thread, started together with a server. With `pid_of`, also the CPU
    seconds Jupyter (that pid) had used when it first answered: a figure the machine's other load
    blurs much less than wall time."""

    def __init__(self, port: int, context: ssl.SSLContext, timeout: float = START_TIMEOUT,
                 pid_of: Callable[[], int] | None = None) -> None:
        self.at: float | None = None
        self.cpu_seconds = math.nan
        self._pid_of = pid_of
        until = time.monotonic() + timeout
        self._thread = threading.Thread(target=self._run, args=(port, context, until), daemon=True)
        self._thread.start()

    def _run(self, port: int, context: ssl.SSLContext, until: float) -> None:
        self.at = first_answer(port, context, until)
        if self.at is not None and self._pid_of:
            try:
                self.cpu_seconds = proc_sample(self._pid_of()).cpu_seconds
            except (OSError, ValueError, KeyError):
                pass

    def wait(self) -> float:
        self._thread.join(START_TIMEOUT + 5)
        if self.at is None:
            raise RuntimeError("the server never answered /api")
        return self.at


# --- /proc readings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    at: float
    rss_kib: int
    pss_kib: int
    cpu_seconds: float
    switches: int  # voluntary + involuntary context switches, summed over all threads


def proc_sample(pid: int) -> ProcSample:
    status = _fields(Path(f"/proc/{pid}/status"))
    rollup = _fields(Path(f"/proc/{pid}/smaps_rollup"))
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / CLK_TCK  # utime, stime: the whole thread group
    switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = _fields(task / "status")
        except OSError:
            continue  # the thread ended meanwhile
        switches += int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])
    return ProcSample(time.monotonic(), int(status["VmRSS"].split()[0]), int(rollup["Pss"].split()[0]),
                      cpu, switches)


def _fields(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        found[key.strip()] = value.strip()
    return found


def processes_of(uid: int) -> list[psutil.Process]:
    """Live processes of the throwaway account: every one of them was started by this benchmark."""
    found = []
    for process in psutil.process_iter(["uids", "status"]):
        uids = process.info["uids"]
        if uids and uids.real == uid and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


# --- the place every server shares: account, password, certificate ----------------------------


@dataclass
class Lab:
    """One account, one password and one certificate store shared by every server compared."""

    account: Account
    folder: Path
    tools: Path  # the venv with supervisord
    runs: int = 0
    settings_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.settings_dir = self.folder / "etc"
        self.settings_dir.mkdir()
        self.root_dir = self.folder / "notebooks"  # the account's to write, as an operator arranges
        self.root_dir.mkdir()
        os.chown(self.root_dir, self.account.uid, pwd.getpwnam(self.account.name).pw_gid)

    @classmethod
    def create(cls, tools: Path) -> Lab:
        return cls(make_account(), open_folder("jr-bench-"), tools)

    def close(self) -> None:
        remove_account(self.account)
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def ca(self) -> Path:
        return self.folder / "state" / "tls" / "ca" / "ca.pem"

    @property
    def live_tls(self) -> Path:
        return self.folder / "state" / "tls" / "live"

    @property
    def password(self) -> str:
        return (self.settings_dir / "initial-password").read_text().strip()

    @property
    def hashed_password(self) -> str:
        return (self.settings_dir / "password").read_text().strip()

    def context(self) -> ssl.SSLContext:
        return client_context(self.ca)

    def settings(self, name: str, **sections: dict[str, Any]) -> Path:
        """settings-NAME.toml beside the shared password file, on a port of its own."""
        merged: dict[str, dict[str, Any]] = {
            "server": {"ip": "127.0.0.1", "port": free_port(), "user": self.account.name,
                       "root_dir": str(self.root_dir)},
            "tls": {"cloud_metadata": False},
            "paths": {"state_dir": str(self.folder / "state"), "runtime_dir": str(self.folder / f"run-{name}")},
        }
        for section, values in sections.items():
            merged.setdefault(section, {}).update(values)
        path = self.settings_dir / f"settings-{name}.toml"
        path.write_text(settings_text(merged))
        return path

    def scratch(self, name: str) -> Path:
        self.runs += 1
        made = self.folder / f"{self.runs:03d}-{name}"
        made.mkdir()
        made.chmod(0o755)
        return made


def port_of(settings: Path) -> int:
    return int(settings.read_text().split("port = ")[1].split()[0])


# --- the servers ------------------------------------------------------------------------------------


class Daemon:
    """`jupyter-remote run` with a real NOTIFY_SOCKET (the test harness's DaemonProcess)."""

    def __init__(self, lab: Lab, settings: Path) -> None:
        self.lab, self.settings, self.port = lab, settings, port_of(settings)
        self.process: DaemonProcess | None = None
        self.started = 0.0

    def start(self) -> Daemon:
        self.process = DaemonProcess(self.settings, self.lab.scratch("daemon"))
        self.started = time.monotonic()
        self.process.start()
        return self

    @property
    def pid(self) -> int:
        assert self.process and self.process.process
        return self.process.process.pid

    def ready(self, after: int = 0, timeout: float = START_TIMEOUT) -> float:
        assert self.process
        return self.process.wait_ready(timeout, after)

    def status(self) -> dict[str, Any]:
        text = (self.lab.folder / f"run-{self.settings.stem.removeprefix('settings-')}" / "status.json").read_text()
        return json.loads(text)

    def jupyter_pid(self) -> int:
        return int(self.status()["jupyter_pid"])

    def log(self) -> str:
        assert self.process
        return self.process.log()

    def stop(self) -> int:
        assert self.process
        return self.process.stop()


class _Supervised:
    """A process tree started here: its pid, what runs below it, and a stop that leaves nothing."""

    process: subprocess.Popen[bytes] | None

    @property
    def pid(self) -> int:
        assert self.process
        return self.process.pid

    def tree(self) -> list[psutil.Process]:
        return process_tree(self.pid)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as systemd would; anything left after `timeout` s is killed by pid."""
        assert self.process
        code = stop_tree(self.process, timeout)
        self._log.close()
        return code


class BareJupyter(_Supervised):
    """`jupyter lab` as a user would run it by hand: a hand-written config with the same TLS files
    (a copy of the daemon's live pair), the same password hash, as the same unprivileged account."""

    def __init__(self, lab: Lab, name: str = "bare", ip: str = "127.0.0.1") -> None:
        self.lab = lab
        self.ip = ip
        self.port = free_port()
        self.home = lab.folder / name
        self.config_dir = self.home / "config"
        self.tls_dir = self.home / "tls"
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self._write_config()

    @property
    def certfile(self) -> Path:
        return self.tls_dir / "fullchain.pem"

    @property
    def keyfile(self) -> Path:
        return self.tls_dir / "privkey.pem"

    def _write_config(self) -> None:
        uid, gid = self.lab.account.uid, self._gid()
        for folder in (self.home, self.tls_dir):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
        self.config_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.config_dir, uid, gid)
        self.install_pair((self.lab.live_tls / "fullchain.pem").read_bytes(),
                          (self.lab.live_tls / "privkey.pem").read_bytes())
        config = {
            "ServerApp": {
                "ip": self.ip, "port": self.port, "port_retries": 0, "open_browser": False,
                "root_dir": str(self.lab.root_dir), "certfile": str(self.certfile), "keyfile": str(self.keyfile),
            },
            "IdentityProvider": {"token": ""},
            "PasswordIdentityProvider": {"hashed_password": self.lab.hashed_password, "password_required": True},
        }
        config_file = self.config_dir / "jupyter_server_config.json"
        config_file.write_text(json.dumps(config, indent=1))
        config_file.chmod(0o600)
        os.chown(config_file, uid, gid)

    def install_pair(self, chain: bytes, key: bytes) -> None:
        """Writes the pair in place, as `cp` does: the account keeps reading the same files."""
        for path, data, mode in ((self.certfile, chain, 0o644), (self.keyfile, key, 0o600)):
            path.write_bytes(data)
            path.chmod(mode)
            os.chown(path, self.lab.account.uid, self._gid())

    def environment(self) -> dict[str, str]:
        home = self.lab.account.home
        return {
            "HOME": str(home), "USER": self.lab.account.name, "LOGNAME": self.lab.account.name,
            "SHELL": "/bin/bash", "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            "JUPYTER_CONFIG_DIR": str(self.config_dir),
        }

    def command(self) -> list[str]:
        jupyter = [str(BIN / "jupyter"), "lab"]
        if os.geteuid() != 0:
            return jupyter
        return ["setpriv", f"--reuid={self.lab.account.uid}", f"--regid={self._gid()}", "--init-groups", "--",
                *jupyter]

    def _gid(self) -> int:
        return pwd.getpwnam(self.lab.account.name).pw_gid

    def start(self) -> BareJupyter:
        self._log = open(self.lab.scratch("bare") / "jupyter.log", "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.command(), env=self.environment(), cwd=self.lab.root_dir, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, process_group=0,
        )
        return self



class Supervisord(_Supervised):
    """supervisord (from PyPI, in its own venv: its import name clashes with ours) running the same
    `jupyter lab` with the same hand-written config as BareJupyter."""

    def __init__(self, lab: Lab, bare: BareJupyter) -> None:
        self.lab, self.bare, self.port = lab, bare, bare.port
        self.process: subprocess.Popen[bytes] | None = None

    def _config(self, folder: Path) -> Path:
        env = ",".join(f'{k}="{v}"' for k, v in self.bare.environment().items())
        text = f"""[supervisord]
nodaemon=true
logfile={folder}/supervisord.log
pidfile={folder}/supervisord.pid
childlogdir={folder}
user=root

[program:jupyter]
command={BIN}/jupyter lab
user={self.lab.account.name}
directory={self.lab.root_dir}
environment={env}
autostart=true
autorestart=true
startsecs=1
stopwaitsecs=10
redirect_stderr=true
stdout_logfile={folder}/jupyter.log
"""
        path = folder / "supervisord.conf"
        path.write_text(text)
        return path

    def start(self) -> Supervisord:
        folder = self.lab.scratch("supervisord")
        config = self._config(folder)
        self._log = open(folder / "stdout.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(self.lab.tools / "bin" / "supervisord"), "-c", str(config)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder,
        )
        return self



def wait_serving(port: int, context: ssl.SSLContext, timeout: float = START_TIMEOUT,
                 host: str = "127.0.0.1") -> float:
    at = first_answer(port, context, time.monotonic() + timeout, interval=0.05, host=host)
    if at is None:
        raise RuntimeError(f"nothing answers /api on port {port}")
    return at


# --- kernels ------------------------------------------------------------------------------------------


def logged_in(lab: Lab, port: int) -> JupyterClient:
    client = JupyterClient(f"https://127.0.0.1:{port}", str(lab.ca))
    response = client.login(lab.password)
    if response.status_code != 302:
        raise RuntimeError(f"login failed: HTTP {response.status_code}")
    return client


def start_kernels(client: JupyterClient, count: int) -> list[str]:
    """`count` running kernels, each having answered a request before this returns."""
    ids = [client.start_kernel() for _ in range(count)]
    for kernel_id in ids:
        channel = client.kernel(kernel_id)
        try:
            channel.execute("pass", timeout=120)
        finally:
            channel.close()
    return ids


def timed(function: Callable[[], Any]) -> float:
    began = time.monotonic()
    function()
    return time.monotonic() - began
