"""What a new user meets first: a terminal with the notebooks' Python, commands that work as
printed, the URL they open, a JupyterLab that does not phone out."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from conftest import Serving, settings_port
from support import (
    JUPYTER_REMOTE, JupyterClient, NetworkNamespace, StandInMetadataService, wait_until,
)

from supervisor.hints import Invocation
from supervisor.public_address import Candidates, choose, primary_address
from supervisor.render import serving_url
from supervisor.settings import DEFAULT_SETTINGS_PATH, Server, Settings, Tls
from supervisor.tls.names import IMDS_URL_VARIABLE


# What a terminal adds for colours, titles and bracketed paste: not what a user reads.
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class Terminal:
    """A JupyterLab terminal as the browser drives it: POST /api/terminals, then its websocket."""

    def __init__(self, client: JupyterClient) -> None:
        response = client.post("/api/terminals")
        assert response.status_code == 200, response.text
        self.name = response.json()["name"]
        url = client.base.replace("https://", "wss://")
        cookies = "; ".join(f"{c.name}={c.value}" for c in client.session.cookies)
        self.socket = websocket.create_connection(
            f"{url}/terminals/websocket/{self.name}", cookie=cookies, timeout=30,
            sslopt={"ca_certs": client.verify},
            header={"X-XSRFToken": client.session.cookies["_xsrf"]},
        )
        self.screen = ""

    def type(self, line: str, until: str, timeout: float = 60) -> str:
        """Type `line` and Enter; what the screen showed until `until` appeared after it."""
        start = len(self.screen)
        self.socket.send(json.dumps(["stdin", line + "\r"]))
        deadline = time.monotonic() + timeout
        while until not in self.screen[start:]:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{until!r} not on the screen within {timeout} s:\n{self.screen}")
            self.socket.settimeout(max(0.1, deadline - time.monotonic()))
            message: list[Any] = json.loads(self.socket.recv())
            if message[0] == "stdout":
                self.screen += message[1]
        return ESCAPES.sub("", self.screen[start:]).replace("\r", "")

    def close(self) -> None:
        self.socket.close()


def test_a_terminal_has_the_notebooks_python_pip_and_jupyter_and_reads_the_login_files(
        serving: Serving, account) -> None:
    environment_bin = account.home / ".local/share/jupyter-remote/python/bin"
    bashrc = account.home / ".bashrc"
    kept = bashrc.read_bytes() if bashrc.exists() else None
    with bashrc.open("a") as stream:  # read through ~/.profile, as a login shell reads it
        stream.write("\nexport JR_BASHRC_READ=yes\n")
    try:
        terminal = Terminal(serving.logged_in_client())
        try:
            # $((...)) makes the marker appear only in the output, never in the echoed input.
            screen = terminal.type(
                "command -v pip python jupyter; echo \"rc=$JR_BASHRC_READ path=$PATH\" "
                "end-$((6*7))", until="end-42")
        finally:
            terminal.close()
    finally:
        if kept is None:
            bashrc.unlink()
        else:
            bashrc.write_bytes(kept)
    found = [line.strip() for line in screen.splitlines() if line.strip().startswith("/")]
    serving_jupyter = Path(JUPYTER_REMOTE).parent / "jupyter"
    assert found[:3] == [str(environment_bin / "pip"), str(environment_bin / "python"),
                         str(serving_jupyter)], screen
    assert "rc=yes" in screen, screen  # ~/.profile, hence ~/.bashrc, was read
    assert "/usr/games" in screen, screen  # Debian's /etc/profile was read (it adds /usr/games)


def test_jupyterlab_asks_nothing_about_news_and_fetches_none(serving: Serving) -> None:
    client = serving.logged_in_client()
    plugin = "@jupyterlab/apputils-extension:notification"
    settings = client.session.get(f"{client.base}/lab/api/settings/{plugin}", timeout=30)
    assert settings.status_code == 200, settings.text
    # What the page uses: the user's own values over the schema's defaults.
    schema = settings.json()["schema"]["properties"]
    composite = {key: schema[key]["default"] for key in ("fetchNews", "checkForUpdates")}
    composite.update(settings.json()["settings"])
    # JupyterLab asks "Would you like to get notified about official Jupyter news?" while
    # fetchNews is "none"; "false" is the answer No.
    assert (composite["fetchNews"], composite["checkForUpdates"]) == ("false", False), composite
    news = client.session.get(f"{client.base}/lab/api/news", timeout=30)
    assert news.status_code == 200 and news.json() == {"news": []}, news.text
    update = client.session.get(f"{client.base}/lab/api/update", timeout=30)
    assert update.status_code == 200 and update.json() == {"notification": None}, update.text
    assert "Failed to get announcements" not in serving.daemon.log()


# --- the URL users open ------------------------------------------------------------------------


def test_the_url_names_what_a_user_types_best_first() -> None:
    everything = Candidates(public_hostname="ec2-54-1-2-3.compute-1.amazonaws.com",
                            public_ipv4="54.1.2.3", configured=("jupyter.example.org", "10.0.0.9"),
                            primary_address="172.31.5.6", hostname="ip-172-31-5-6")
    assert choose(everything) == "ec2-54-1-2-3.compute-1.amazonaws.com"
    no_dns = Candidates(public_ipv4="54.1.2.3", configured=("jupyter.example.org",),
                        primary_address="172.31.5.6", hostname="ip-172-31-5-6")
    assert choose(no_dns) == "54.1.2.3"
    off_aws = Candidates(configured=("jupyter.example.org",), primary_address="172.31.5.6",
                         hostname="ip-172-31-5-6")
    assert choose(off_aws) == "jupyter.example.org"
    bare = Candidates(primary_address="172.31.5.6", hostname="ip-172-31-5-6")
    assert choose(bare) == "172.31.5.6"
    assert choose(Candidates(hostname="box")) == "box"  # no route at all

    settings = Settings(source=Path("/s.toml"), server=Server(ip="::", port=443, base_url="/j/"))
    assert serving_url(settings, Candidates(primary_address="2001:db8::7")) == \
        "https://[2001:db8::7]/j/lab"
    local = Settings(source=Path("/s.toml"), server=Server(ip="127.0.0.1"), tls=Tls(mode="off"))
    assert serving_url(local, Candidates(primary_address="172.31.5.6")) == \
        "http://127.0.0.1:8888/lab"  # a bound address is what serves


@pytest.fixture
def namespace() -> Iterator[NetworkNamespace]:
    if os.geteuid() != 0:
        pytest.skip("needs root: makes a network namespace")
    made = NetworkNamespace()
    yield made
    made.close()


def test_the_primary_address_is_the_one_the_default_route_leaves_from(namespace) -> None:
    assert namespace.run(primary_address) == namespace.address


def test_on_aws_log_status_and_systemd_show_the_public_name_and_no_file_url(
        namespace, make_settings, start_daemon) -> None:
    imds = StandInMetadataService("54.1.2.3", "ec2-54-1-2-3.compute-1.amazonaws.com", namespace)
    try:
        settings = make_settings(server={"ip": "0.0.0.0"}, tls={"cloud_metadata": True})
        daemon = start_daemon(settings, prefix=namespace.prefix, **{IMDS_URL_VARIABLE: imds.url})
        daemon.wait_ready()
    finally:
        imds.close()
    url = f"https://ec2-54-1-2-3.compute-1.amazonaws.com:{settings_port(settings)}/lab"
    assert f"STATUS=Serving {url}" in daemon.notify.lines(), daemon.notify.lines()
    assert daemon.status()["url"] == url
    log = daemon.log()
    assert f"serving {url}" in log, log[-3000:]
    # Jupyter's own lines: the same URL, and no useless file on a remote server.
    internal = f"://{socket.gethostname()}:"  # the machine's host name: on AWS, ip-172-31-...
    for hint in ("open this file in a browser", "file://", "copy and paste", internal):
        assert hint not in log, log[-3000:]
    assert re.search(rf"running at:\n\[jupyter\] \[I [^]]*\] {re.escape(url)}\n", log), log[-3000:]


# --- commands work as printed ----------------------------------------------------------------

# A shell of someone who tried it from a checkout: jupyter-remote is not on this PATH.
BARE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", "HOME": "/root" if os.geteuid() == 0 else os.environ["HOME"]}
REPO = Path(__file__).resolve().parent.parent


def shell(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`line` exactly as printed, typed into a shell."""
    return subprocess.run(["sh", "-c", line], cwd=cwd, env=BARE_ENV, capture_output=True,
                          text=True, timeout=120)


def shell_on_a_terminal(line: str, answers: list[tuple[str, str]], timeout: float = 120) -> str:
    """`line` run on a terminal of its own; each answer typed once its prompt shows. Returns what
    the terminal showed; fails unless the command succeeded."""
    master, slave = os.openpty()
    process = subprocess.Popen(["sh", "-c", line], stdin=slave, stdout=slave, stderr=slave,
                               env=BARE_ENV, start_new_session=True, close_fds=True)
    os.close(slave)
    screen, pending = b"", list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if pending and pending[0][0].encode() in screen:
                os.write(master, pending.pop(0)[1].encode() + b"\n")
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the command ended and closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)
    shown = screen.decode(errors="replace")
    assert code == 0 and not pending, f"{line!r} exited {code}:\n{shown}"
    return shown


def printed(pattern: str, text: str) -> str:
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{pattern!r} not in:\n{text}"
    return found.group(1)


def test_hints_for_the_installed_service_and_for_a_checkout() -> None:
    service = Invocation("jupyter-remote", DEFAULT_SETTINGS_PATH, sudo=True)
    assert service.command("cert", "ca") == "sudo jupyter-remote cert ca"
    checkout = Invocation("/home/a b/jr/.venv-run/bin/jupyter-remote",
                          Path("/home/a b/jr/.run/s.toml"), sudo=False)
    assert shlex.split(checkout.command("password")) == [
        "/home/a b/jr/.venv-run/bin/jupyter-remote", "password", "--settings",
        "/home/a b/jr/.run/s.toml"]


def test_every_printed_command_works_as_printed_when_tried_from_a_checkout(
        make_settings, start_daemon, folder: Path) -> None:
    if shutil.which("jupyter-remote", path=BARE_ENV["PATH"]):
        pytest.skip("jupyter-remote is installed on this machine: no checkout-only user here")
    settings = make_settings()
    work = folder / "work"
    work.mkdir()
    harness_run = shlex.join([JUPYTER_REMOTE, "run", "--settings", str(settings)])
    # Before the first start, `check` and `cert ca` point at the command that starts the server:
    # the one this test then runs.
    before = shell(shlex.join([JUPYTER_REMOTE, "check", "--settings", str(settings)]), work)
    assert printed(r"`(.+)` makes one at its first start", before.stdout) == harness_run
    no_ca = shell(shlex.join([JUPYTER_REMOTE, "cert", "ca", "--settings", str(settings)]), work)
    assert printed(r"`(.+)` makes it", no_ca.stderr) == harness_run

    daemon = start_daemon(settings, **BARE_ENV)
    daemon.wait_ready()
    ca_pem = (folder / "state/tls/ca/ca.pem").read_text()

    # scripts/run's banner, as printed once the first start made the password.
    banner = subprocess.run([REPO / "scripts/banner", JUPYTER_REMOTE, str(settings)],
                            capture_output=True, text=True, timeout=30, check=True).stdout
    assert printed(r"^password: +read it in (\S+) ", banner) == str(folder / "initial-password")
    reloaded = shell(printed(r"after an edit: (.+)\)$", banner), work)
    assert reloaded.returncode == 0 and "reloaded" in reloaded.stdout, reloaded.stderr
    trusted = shell(printed(r"^trust the CA: (.+)$", banner), work)
    assert trusted.returncode == 0 and (work / "jupyter-remote-ca.pem").read_text() == ca_pem

    # cert show's way to trust the CA.
    shown = shell(shlex.join([JUPYTER_REMOTE, "cert", "show", "--settings", str(settings)]), work)
    (work / "jupyter-remote-ca.pem").unlink()
    trust = printed(r"trust the CA once: (.+), then import that file", shown.stdout)
    assert shell(trust, work).returncode == 0
    assert (work / "jupyter-remote-ca.pem").read_text() == ca_pem

    # The log's way to change the password; then the banner no longer points at a removed file.
    change = printed(r"change it with: (.+)\)$", daemon.log())
    shell_on_a_terminal(change, [("New password:", "a new secret"), ("Repeat it:", "a new secret")])
    client = JupyterClient(f"https://127.0.0.1:{settings_port(settings)}",
                           str(folder / "state/tls/ca/ca.pem"))
    wait_until(lambda: client.login("a new secret").status_code == 302, 30,
               "a login with the new password")
    banner = subprocess.run([REPO / "scripts/banner", JUPYTER_REMOTE, str(settings)],
                            capture_output=True, text=True, timeout=30, check=True).stdout
    assert "initial-password" not in banner, banner
    shell_on_a_terminal(printed(r"^password: +set \(change it: (.+)\)$", banner),
                        [("New password:", "another"), ("Repeat it:", "another")])
