"""A browser's part, run by test_package_e2e.py inside the container's network namespace.

    nsenter -t <container pid 1> -n -- python client.py ROOT PORT ACTION [ARGUMENT]

ROOT is the container's root folder as the host sees it (/proc/<pid 1>/root): the password and the CA
certificate are read from there, so that no secret travels on a command line. It logs in through the
password form over HTTPS, trusting the package's own CA, then:

    login               prints {"login_status": 302, "logged_in": true}
    kernel CODE         runs CODE in a new kernel, prints {"output": ...}; the kernel keeps running
    terminal COMMAND    types COMMAND into a new terminal, prints {"output": ...} once "END-OF-OUTPUT"
                        appears (the command must print it); the terminal stays open
    dashboard CODE      runs CODE in a new kernel (the kernel keeps running); the last line it prints
                        is a Dask dashboard link, fetched on this server with the login's cookie and
                        without it; prints {"output": ..., "link": ..., "logged_in": {...}, "stranger": {...}}
"""

from __future__ import annotations

import json
import ssl
import sys
import time
import urllib.parse
from pathlib import Path

import websocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from support import JupyterClient

CA_FILE = "var/lib/jupyter-remote/tls/ca/ca.pem"
PASSWORD_FILE = "etc/jupyter-remote/initial-password"
END = "END-OF-OUTPUT"


def logged_in_client(root: Path, port: int) -> tuple[JupyterClient, int]:
    # 127.0.0.1 is among the names the server's certificate covers.
    client = JupyterClient(f"https://127.0.0.1:{port}", verify=str(root / CA_FILE))
    password = (root / PASSWORD_FILE).read_text().strip()
    status = client.login(password).status_code
    return client, status


def run_in_terminal(client: JupyterClient, command: str, timeout: float = 30) -> str:
    response = client.post("/api/terminals")
    assert response.status_code == 200, response.text
    name = response.json()["name"]
    cookies = "; ".join(f"{c.name}={c.value}" for c in client.session.cookies)
    socket = websocket.create_connection(
        f"{client.base.replace('https://', 'wss://')}/terminals/websocket/{name}", cookie=cookies,
        sslopt={"ca_certs": client.verify, "cert_reqs": ssl.CERT_REQUIRED}, timeout=timeout,
    )
    try:
        socket.send(json.dumps(["stdin", command + "\r"]))
        output, deadline = "", time.monotonic() + timeout
        # The echo of the typed line holds the marker too: wait for it on a line of its own.
        while time.monotonic() < deadline and f"\n{END}" not in output.replace("\r", ""):
            message = json.loads(socket.recv())
            if message[0] == "stdout":
                output += message[1]
        return output
    finally:
        socket.close()


def fetch_dashboard(client: JupyterClient, code: str) -> dict[str, object]:
    channel = client.kernel(client.start_kernel())
    try:
        channel.socket.settimeout(100)  # the kernel is silent while Client() waits for the cluster
        output = channel.execute(code, timeout=100)
    finally:
        channel.close()
    link = output.strip().splitlines()[-1] if output.strip() else ""
    # The link names the server's public address; this network namespace reaches it on 127.0.0.1.
    url = client.base + urllib.parse.urlsplit(link).path
    stranger = JupyterClient(client.base, verify=client.verify)
    answers = {}
    for who, session in (("logged_in", client.session), ("stranger", stranger.session)):
        response = session.get(url, allow_redirects=False, timeout=30)
        answers[who] = {"status": response.status_code, "location": response.headers.get("Location", ""),
                        "dask_page": "Dask" in response.text and "bokeh" in response.text.lower()}
    return {"output": output, "link": link, **answers}


def main() -> None:
    root, port, action = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    client, status = logged_in_client(root, port)
    if action == "login":
        print(json.dumps({"login_status": status, "logged_in": client.logged_in()}))
        return
    assert status == 302, f"login answered {status}"
    if action == "kernel":
        channel = client.kernel(client.start_kernel())
        try:
            print(json.dumps({"output": channel.execute(sys.argv[4])}))
        finally:
            channel.close()
    elif action == "dashboard":
        print(json.dumps(fetch_dashboard(client, sys.argv[4])))
    elif action == "terminal":
        print(json.dumps({"output": run_in_terminal(client, sys.argv[4])}))
    else:
        raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    main()
