"""Idle stop on the host, end to end: real Jupyter, real kernels and terminals over websockets, a
real detached process of the account, a real JupyterLab in chromium; `action = "stop"` (the host is
never powered off) and limits of a fraction of a minute. Each test lets one kind of activity run
past the limit, checks the server is still up, then lets it end and sees the server stop, exit 0
and say why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import websocket
from selenium.webdriver.common.by import By
from conftest import Serving
from support import JupyterClient, chromium, cli, kill_all, wait_until

import psutil
import pytest

from supervisor import idle

LIMIT_MINUTES, WARN_MINUTES = 0.2, 0.1  # 12 s and 6 s
ACTIVE_FOR = 20.0  # seconds an activity goes on: well past the limit
IDLE = {"stop_after_minutes": LIMIT_MINUTES, "action": "stop", "warn_minutes": WARN_MINUTES}
# What an open JupyterLab tab asks for by itself, with nobody at the keyboard.
TAB_POLLING = ("/api/sessions", "/api/kernels", "/api/terminals", "/api/contents?content=1",
               "/api/kernelspecs", "/api/me", "/lab/api/settings", "/jupyter-remote/idle")


# An open login session is activity (an SSH user's work keeps the machine up): with one open on this
# machine, no test here could see the server stop.
pytestmark = [
    pytest.mark.skipif(idle.login_sessions() > 0,
                       reason="a login session is open on this machine: that is activity"),
    # Run by a user, the daemon serves as that user, and this test run is the user's too: its own
    # CPU (pytest, the other worker) is the account's activity, and the server rightly stays up.
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="needs root: as a user, the test run's own CPU is the account's"),
]


def running(serving: Serving) -> bool:
    return serving.daemon.process.poll() is None


def stopped_for_idleness(serving: Serving, timeout: float = 60,
                         limit: float = LIMIT_MINUTES) -> None:
    """The daemon ends by itself, exit 0, and says why, in the log and in STATUS=."""
    wait_until(lambda: not running(serving), timeout, "the idle stop")
    assert serving.daemon.process.returncode == 0
    log = serving.daemon.log()
    assert f"nothing active for {limit:g} minutes" in log, log[-3000:]
    assert 'stopping jupyter-remote, as [idle] action = "stop" says' in log
    assert any(line.startswith("STATUS=Stopping: nothing active")
               for line in serving.daemon.notify.lines())


def stays_up_while(serving: Serving, activity: Callable[[], None]) -> None:
    """`activity()` runs for ACTIVE_FOR seconds; the limit passes meanwhile and nothing stops."""
    began = time.monotonic()
    activity()
    assert time.monotonic() - began >= ACTIVE_FOR - 1
    assert running(serving), serving.daemon.log()[-3000:]
    assert "Stopping: nothing active" not in " ".join(serving.daemon.notify.lines())


def poll_like_an_open_tab(client: JupyterClient) -> dict[str, str]:
    for path in TAB_POLLING:
        client.session.get(f"{client.base}{path}", timeout=10)
    return client.session.get(f"{client.base}/jupyter-remote/idle", timeout=10).json()


def test_an_idle_server_is_warned_then_stops_and_probes_and_an_open_tab_do_not_keep_it_up(serve):
    serving = serve(idle=IDLE)  # health probes every second all along
    client = serving.logged_in_client()
    seen: list[dict[str, str]] = []

    def warned() -> bool:
        if not running(serving):
            return False
        notice = poll_like_an_open_tab(client)
        if notice.get("message"):
            seen.append(serving.daemon.status())
            return True
        return False

    wait_until(warned, 60, "the warning an open JupyterLab shows", interval=0.5)
    notice = client.session.get(f"{client.base}/jupyter-remote/idle", timeout=10).json()
    assert "Any activity keeps it up" in notice["message"]
    status = seen[0]
    assert status["idle_seconds"] >= LIMIT_MINUTES * 60 - WARN_MINUTES * 60 - 1
    due = datetime.fromisoformat(status["idle_action_at"])
    assert abs((due - datetime.fromisoformat(notice["due"])).total_seconds()) <= 2
    assert any("idle: stop at" in line for line in serving.daemon.notify.lines())
    shown = cli("status", "--settings", str(serving.settings)).stdout
    assert "s with nothing active; idle action due at" in shown
    checked = cli("check", "--settings", str(serving.settings)).stdout
    assert f"idle stop:   stop jupyter-remote after {LIMIT_MINUTES:g} minutes" in checked
    while running(serving):  # the tab goes on polling until the server is gone
        try:
            poll_like_an_open_tab(client)
        except OSError:
            break
        time.sleep(0.5)
    stopped_for_idleness(serving)


def test_a_silent_busy_kernel_keeps_it_up_and_it_stops_after_the_cell(serve):
    serving = serve(idle=IDLE)
    client = serving.logged_in_client()
    kernel = client.kernel(client.start_kernel())
    try:
        request = kernel.send(f"import time; time.sleep({ACTIVE_FOR})")  # prints nothing

        def cell() -> None:
            assert kernel.wait(request, timeout=ACTIVE_FOR + 30) == ""

        stays_up_while(serving, cell)
    finally:
        kernel.close()
    stopped_for_idleness(serving)


def test_a_detached_cpu_burning_process_of_the_account_keeps_it_up(serve, account):
    serving = serve(idle=IDLE)
    burn = f"import time\nend = time.time() + {ACTIVE_FOR}\nwhile time.time() < end: pass\n"
    as_account = ([] if os.geteuid() != 0 else
                  ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--clear-groups"])
    # As `nohup ... &` from a terminal since closed: its own session, outside Jupyter's tree.
    job = subprocess.Popen([*as_account, sys.executable, "-c", burn], start_new_session=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        stays_up_while(serving, lambda: job.wait(ACTIVE_FOR + 30))
    finally:
        kill_all([psutil.Process(job.pid)] if job.poll() is None else [])
        job.wait(10)
    stopped_for_idleness(serving)


@contextmanager
def terminal(client: JupyterClient) -> Iterator[websocket.WebSocket]:
    response = client.post("/api/terminals")
    assert response.status_code == 200, response.text
    name = response.json()["name"]
    url = client.base.replace("https://", "wss://") + f"/terminals/websocket/{name}"
    cookies = "; ".join(f"{c.name}={c.value}" for c in client.session.cookies)
    socket = websocket.create_connection(url, cookie=cookies, sslopt={"ca_certs": client.verify},
                                         timeout=30)
    try:
        yield socket
    finally:
        socket.close()


def test_typing_in_a_terminal_keeps_it_up(serve):
    serving = serve(idle=IDLE)
    client = serving.logged_in_client()
    with terminal(client) as socket:

        def type_now_and_then() -> None:
            # A keystroke every 4 s; a command that runs long and silently needs none.
            end = time.monotonic() + ACTIVE_FOR
            while time.monotonic() < end:
                socket.send(json.dumps(["stdin", "true\r"]))
                time.sleep(4)

        stays_up_while(serving, type_now_and_then)
        stopped_for_idleness(serving)


def test_an_open_jupyterlab_shows_the_warning_and_its_polling_does_not_keep_the_server_up(serve):
    limit = 0.3  # 18 s, warned 15 s before: 3 s after the login and the page load
    serving = serve(idle={"stop_after_minutes": limit, "action": "stop", "warn_minutes": 0.25})
    with chromium() as browser:
        browser.get(f"{serving.base}/login?next=%2Flab")
        browser.find_element(By.NAME, "password").send_keys(serving.password)
        browser.find_element(By.ID, "login_submit").click()
        wait_until(lambda: "Any activity keeps it up" in browser.page_source, 60,
                   "the warning in JupyterLab's notification area", interval=0.5)
        # The text can reach the page a moment before its toast is drawn.
        wait_until(lambda: any("Any activity keeps it up" in toast.text
                               for toast in browser.find_elements(By.CSS_SELECTOR, ".Toastify__toast")),
                   10, "the warning as a toast", interval=0.2)
        # The tab stays open, untouched, polling as JupyterLab does: the server stops all the same.
        stopped_for_idleness(serving, limit=limit)


def test_tasks_on_the_local_dask_cluster_keep_it_up_and_an_idle_cluster_does_not(serve):
    serving = serve(idle=IDLE, dask={"enabled": True})
    client = serving.logged_in_client()
    kernel = client.kernel(client.start_kernel())
    try:
        # A task that takes its time without CPU, and a cell that returns at once: only the
        # cluster's own report can keep the server up while it runs.
        output = kernel.execute("from dask.distributed import Client\nimport time\n"
                                "client = Client(timeout=60)\n"
                                f"task = client.submit(time.sleep, {ACTIVE_FOR}, pure=False)\n"
                                "print(task.status)\n", timeout=90)
        assert output.strip() == "pending", output
        stays_up_while(serving, lambda: time.sleep(ACTIVE_FOR))
        # The cluster, its workers and the notebook's connected client stay; nothing runs.
        stopped_for_idleness(serving)
    finally:
        kernel.close()
