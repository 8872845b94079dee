"""Real parts for the tests: a notify socket, the daemon as a process, and a Jupyter client that logs
in through the password form and runs code in a kernel over its websocket.

Every wait is bounded; every process started here is stopped by pid, also when a test fails.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import psutil
import requests
import websocket
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from supervisor.child import process_tree  # the daemon's own listing: tests stop what it would

JUPYTER_REMOTE = str(Path(sys.executable).parent / "jupyter-remote")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def open_folder(prefix: str) -> Path:
    """A temporary folder the unprivileged Jupyter account can reach (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o755)
    return folder


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def settings_text(sections: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Account:
    name: str
    uid: int
    gid: int
    home: Path


class NotifyListener:
    """A real NOTIFY_SOCKET: a datagram socket whose messages a thread collects with their time."""

    def __init__(self, folder: Path, on_message: Callable[[str], None] | None = None) -> None:
        self.on_message = on_message  # called on the listener's thread as each datagram arrives
        self.path = folder / f"notify-{uuid.uuid4().hex[:8]}.sock"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(self.path))
        self.socket.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while self._running:
            try:
                data = self.socket.recv(65536)
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))
            if self.on_message:
                self.on_message(data.decode())

    def lines(self) -> list[str]:
        with self._lock:
            return [m for _, m in self.messages]

    def count(self, message: str) -> int:
        return sum(1 for m in self.lines() if m == message)

    def wait_for(self, message: str, timeout: float, after: int = 0) -> float:
        """Wait for the `after`+1-th datagram equal to (or starting with) `message`; its arrival time."""

        def arrived() -> float | None:
            with self._lock:
                found = [t for t, m in self.messages if m == message or m.startswith(message)]
            return found[after] if len(found) > after else None

        return wait_until(arrived, timeout, f"notify message {message!r} #{after + 1}")

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2)
        self.socket.close()
        self.path.unlink(missing_ok=True)


@dataclass
class DaemonProcess:
    """`jupyter-remote run` as a real process, with a notify socket and its log in a file."""

    settings: Path
    folder: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    on_notify: Callable[[str], None] | None = None
    prefix: list[str] = field(default_factory=list)  # e.g. to run it in a network namespace
    process: subprocess.Popen[bytes] | None = None
    notify: NotifyListener | None = None
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def log_path(self) -> Path:
        return self.folder / f"daemon-{self.name}.log"

    def start(self) -> DaemonProcess:
        self.notify = NotifyListener(self.folder, self.on_notify)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env.update(NOTIFY_SOCKET=str(self.notify.path), **self.extra_env)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - the daemon writes to it until stop()
        self.process = subprocess.Popen(
            [*self.prefix, JUPYTER_REMOTE, "run", "--settings", str(self.settings)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        result = cli("status", "--json", "--settings", str(self.settings))
        return json.loads(result.stdout)

    def wait_ready(self, timeout: float = 90, after: int = 0) -> float:
        assert self.notify is not None
        try:
            return self.notify.wait_for("READY=1", timeout, after)
        except AssertionError:
            raise AssertionError(f"no READY=1; daemon log:\n{self.log()[-4000:]}") from None

    def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def tree(self) -> list[psutil.Process]:
        return process_tree(self.process.pid)  # type: ignore[union-attr]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, bounded wait; on failure SIGKILL the daemon and every process below it, by pid."""
        if self.process is None:
            return 0
        code = stop_tree(self.process, timeout)
        self._log.close()
        if self.notify:
            self.notify.close()
        return code


def stop_tree(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, as systemd sends it; after `timeout` s SIGKILL. Every process that was below it is
    then killed by pid, so nothing a test started outlives it, even on failure."""
    below = process_tree(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        below += process_tree(process.pid)
        process.kill()
        code = process.wait(10)
    kill_all(below)
    return code


def kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JUPYTER_REMOTE, *args], input=stdin, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class JupyterClient:
    """A browser's part: the login form, then kernels over their websocket."""

    def __init__(self, base: str, verify: str | bool, source_address: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.verify = verify
        self.session = requests.Session()
        self.session.trust_env = False  # this machine sets REQUESTS_CA_BUNDLE; we pin our own CA
        self.session.verify = verify
        if source_address:
            adapter = _SourceAddressAdapter(source_address)
            self.session.mount("https://", adapter)
            self.session.mount("http://", adapter)

    def login(self, password: str) -> requests.Response:
        self.session.get(f"{self.base}/login", timeout=10)
        return self.session.post(
            f"{self.base}/login",
            data={"password": password, "_xsrf": self.session.cookies.get("_xsrf", "")},
            allow_redirects=False, timeout=30,
        )

    def logged_in(self) -> bool:
        return self.session.get(f"{self.base}/api/status", timeout=10).status_code == 200

    def post(self, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return self.session.post(
            f"{self.base}{path}", json=body or {}, timeout=30,
            headers={"X-XSRFToken": self.session.cookies.get("_xsrf", "")},
        )

    def start_kernel(self) -> str:
        response = self.post("/api/kernels", {"name": "python3"})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def kernel(self, kernel_id: str) -> KernelChannel:
        return KernelChannel(self, kernel_id)


class KernelChannel:
    """One websocket to a kernel: execute code and read what it printed."""

    def __init__(self, client: JupyterClient, kernel_id: str) -> None:
        url = client.base.replace("https://", "wss://").replace("http://", "ws://")
        cookies = "; ".join(f"{c.name}={c.value}" for c in client.session.cookies)
        sslopt: dict[str, Any] = {}
        if url.startswith("wss://"):
            sslopt = {"ca_certs": client.verify} if isinstance(client.verify, str) else {"cert_reqs": 0}
        self.socket = websocket.create_connection(
            f"{url}/api/kernels/{kernel_id}/channels", cookie=cookies, sslopt=sslopt, timeout=30,
            header={"X-XSRFToken": client.session.cookies.get("_xsrf", "")},
        )

    def execute(self, code: str, timeout: float = 60) -> str:
        return self.wait(self.send(code), timeout)

    def send(self, code: str) -> str:
        """Ask the kernel to run `code`; the request's id, for `wait`."""
        msg_id = uuid.uuid4().hex
        self.socket.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex,
                       "username": "test", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))
        return msg_id

    def wait(self, msg_id: str, timeout: float = 60) -> str:
        """What the request printed, once the kernel is idle again."""
        output, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            if kind == "stream":
                output.append(message["content"]["text"])
            elif kind == "error":
                output.append("\n".join(message["content"]["traceback"]))
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                return "".join(output)
        raise AssertionError(f"no answer from the kernel within {timeout} s")

    def close(self) -> None:
        self.socket.close()


class StandInMetadataService:
    """IMDSv2 as AWS speaks it, on 127.0.0.1 (of a network namespace, if given): a PUT for a
    token, then GETs that present it."""

    def __init__(self, public_ipv4: str, public_hostname: str,
                 namespace: NetworkNamespace | None = None) -> None:
        self.answers = {"public-ipv4": public_ipv4, "public-hostname": public_hostname}
        self.requests: list[str] = []
        self.violations: list[str] = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                service.requests.append(f"PUT {self.path}")
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                if self.path != "/latest/api/token" or not ttl:
                    service.violations.append(f"PUT {self.path} without a TTL header")
                    return self._answer(400, "")
                self._answer(200, "token-abc")

            def do_GET(self) -> None:
                service.requests.append(f"GET {self.path}")
                if self.headers.get("X-aws-ec2-metadata-token") != "token-abc":
                    service.violations.append(f"GET {self.path} without the token")
                    return self._answer(401, "")
                item = self.path.removeprefix("/latest/meta-data/")
                if item in service.answers:
                    return self._answer(200, service.answers[item])
                self._answer(404, "")

            def _answer(self, code: int, body: str) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        def make() -> http.server.ThreadingHTTPServer:
            return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

        # Made inside the namespace, the listening socket belongs to the namespace's loopback.
        self.server = namespace.run(make) if namespace else make()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


CLONE_NEWNET = 0x40000000


class NetworkNamespace:
    """A network namespace of the test's own (root only): loopback up, and one interface (one end
    of a veth pair whose other end is in there too) with an address and a default route through it,
    so "the machine's primary address" is known.
    Processes enter it through `prefix`; `run` calls a function on a thread inside it (a socket
    made there belongs to it). Nothing it holds reaches a real network."""

    def __init__(self, address: str = "198.51.100.7", prefix_length: int = 24,
                 gateway: str = "198.51.100.1") -> None:
        self.name = f"jr-{uuid.uuid4().hex[:8]}"
        self.address = address
        self._ip("netns", "add", self.name)
        try:
            for command in (["link", "set", "lo", "up"],
                            # A pair of which both ends stay inside: no path out.
                            ["link", "add", "jr0", "type", "veth", "peer", "name", "jr1"],
                            ["addr", "add", f"{address}/{prefix_length}", "dev", "jr0"],
                            ["link", "set", "jr1", "up"],
                            ["link", "set", "jr0", "up"],
                            ["route", "add", "default", "via", gateway]):
                self._ip("-n", self.name, *command)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, function: Callable[[], Any]) -> Any:
        import ctypes

        result: list[Any] = []
        errors: list[BaseException] = []

        def inside() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:  # this thread alone enters it
                    raise OSError(ctypes.get_errno(), "setns")
                result.append(function())
            except BaseException as error:  # handed to the caller below
                errors.append(error)
            finally:
                os.close(fd)

        thread = threading.Thread(target=inside)
        thread.start()
        thread.join(30)
        if errors:
            raise errors[0]
        assert result, "no result from inside the network namespace within 30 s"
        return result[0]

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)

    def peer(self, address: str = "198.51.100.8") -> NetworkNamespace:
        """Another namespace, holding the far end of the pair: another machine on this one's
        network, at `address`. Closed by the caller."""
        other = object.__new__(NetworkNamespace)
        other.name, other.address = f"jr-{uuid.uuid4().hex[:8]}", address
        self._ip("netns", "add", other.name)
        try:
            self._ip("-n", self.name, "link", "set", "jr1", "netns", other.name)
            for command in (["link", "set", "lo", "up"], ["addr", "add", f"{address}/24", "dev", "jr1"],
                            ["link", "set", "jr1", "up"]):
                self._ip("-n", other.name, *command)
        except BaseException:
            other.close()
            raise
        return other


class _SourceAddressAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def make_account() -> Account:
    """As root: a throwaway unprivileged account with a writable home; else the current user."""
    if os.geteuid() != 0:
        import pwd

        entry = pwd.getpwuid(os.geteuid())
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
    name = f"jrtest{uuid.uuid4().hex[:8]}"
    home = open_folder("jr-home-") / name
    subprocess.run(
        ["useradd", "--home-dir", str(home), "--create-home", "--shell", "/bin/bash", "--user-group", name],
        check=True, capture_output=True,
    )
    import pwd

    entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, entry.pw_gid, home)


def remove_account(account: Account) -> None:
    if os.geteuid() != 0:
        return
    # Only processes this session started ran as the account; any left are killed by pid.
    for process in psutil.process_iter(["uids"]):
        if process.info["uids"] and process.info["uids"].real == account.uid:
            try:
                process.kill()
            except psutil.Error:
                pass
    subprocess.run(["userdel", account.name], capture_output=True)
    shutil.rmtree(account.home.parent, ignore_errors=True)


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """Debian's chromium, headless, driven by selenium."""
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    # Loopback only, no proxy; the test's own self-signed server.
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--ignore-certificate-errors", "--no-proxy-server", "--window-size=1280,900"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield browser
    finally:
        browser.quit()  # ends chromedriver and the browser it started
