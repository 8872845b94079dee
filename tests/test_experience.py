"""What a new user meets first: a terminal with the notebooks' Python, commands that work as
printed, the URL they open, a JupyterLab that does not phone out."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import websocket

from conftest import Serving
from support import JUPYTER_REMOTE, JupyterClient


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
            sslopt={"ca_certs": client.verify}, header={"X-XSRFToken": client.session.cookies["_xsrf"]},
        )
        self.screen = ""

    def type(self, line: str, until: str, timeout: float = 60) -> str:
        """Type `line` and Enter; what the screen showed until `until` appeared after it."""
        start = len(self.screen)
        self.socket.send(json.dumps(["stdin", line + "\r"]))
        deadline = time.monotonic() + timeout
        while until not in self.screen[start:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{until!r} not on the screen within {timeout} s:\n{self.screen}")
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
