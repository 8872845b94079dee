"""[dask]: Client() in a notebook, its dashboard behind the login, and nothing of Dask reachable
without it. Real parts throughout: a real LocalCluster run by the daemon's Jupyter, a real
scheduler in a second process, jupyter-server-proxy, bokeh's dashboard and its websocket."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import websocket
from conftest import Serving, settings_port
from support import (
    JupyterClient, NetworkNamespace, chromium, free_port, stop_tree, wait_until,
)

from supervisor.dask.plan import files


DATA = Path(__file__).parent / "data"
CONNECT = ("from dask.distributed import Client\n"
           "client = Client(timeout=60)\n"
           "client.wait_for_workers({workers}, timeout=60)\n")


def notebook(serving: Serving, client: JupyterClient | None = None):
    client = client or serving.logged_in_client()
    return client.kernel(client.start_kernel())


def run(kernel, code: str, timeout: float = 120) -> str:
    output = kernel.execute(code, timeout)
    assert "Traceback" not in output and "Error" not in output, output
    return output


def connected(serving: Serving, client: JupyterClient, workers: int) -> tuple[object, dict]:
    """A notebook whose `client = Client()` connected and sees `workers` workers; what it knows of
    the cluster."""
    kernel = notebook(serving, client)
    output = run(kernel, CONNECT.format(workers=workers) + "import json\n"
                 "info = client.scheduler_info()\n"
                 "print(json.dumps({'link': client.dashboard_link, 'scheduler': info['address'],"
                 " 'workers': sorted(info['workers'])}))")
    return kernel, json.loads(output.strip().splitlines()[-1])


def proxied(serving: Serving, link: str) -> str:
    """The dashboard link as this test reaches it: the same path, on the loopback base."""
    return serving.base + urllib.parse.urlsplit(link).path


def websocket_opens(url: str, ca: str, cookie: str = "") -> bool:
    try:
        opened = websocket.create_connection(url.replace("https://", "wss://"), cookie=cookie,
                                             sslopt={"ca_certs": ca}, timeout=15)
    except (websocket.WebSocketException, OSError):
        return False
    opened.close()
    return True


def cookie_header(client: JupyterClient) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in client.session.cookies)


@pytest.fixture
def two_workers(account) -> Iterator[None]:
    """The local cluster's size, as a user sets it: in the account's own Dask configuration."""
    folder = Path(account.home) / ".config" / "dask"
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "jupyter-remote.yaml"
    path.write_text("jupyter-remote:\n  local-cluster:\n    n_workers: 2\n"
                    "    threads_per_worker: 1\n")
    for item in (folder.parent, folder, path) if made else (path,):
        os.chown(item, account.uid, account.gid)
    yield
    path.unlink()


def test_client_in_a_notebook_gets_the_local_cluster_and_its_dashboard_behind_the_login(
        serve, two_workers) -> None:
    serving = serve(dask={"enabled": True})
    user = serving.logged_in_client()
    kernel, cluster = connected(serving, user, workers=2)
    # Two workers and a scheduler, over TLS, on loopback alone.
    assert cluster["scheduler"].startswith("tls://127.0.0.1:"), cluster
    assert len(cluster["workers"]) == 2, cluster
    assert all(w.startswith("tls://127.0.0.1:") for w in cluster["workers"]), cluster
    # The link is on the server's own URL, through the proxy; a logged-in browser opens it.
    link = cluster["link"]
    port = json.loads((serving.folder / "run" / "dask-ports.json").read_text())["dashboard"]
    assert link == f"https://127.0.0.1:{serving.port}/proxy/127.0.0.1:{port}/status", link
    page = user.session.get(proxied(serving, link), timeout=30)
    assert page.status_code == 200 and "Dask" in page.text, serving.daemon.log()[-4000:]
    root = proxied(serving, link).removesuffix("/status")
    plots = user.session.get(f"{root}/individual-plots.json", timeout=30)
    assert plots.status_code == 200 and "Individual Task Stream" in plots.json(), plots.text[:300]
    assert websocket_opens(f"{root}/status/ws", serving.ca, cookie_header(user))
    # Work runs on the cluster, from the notebook.
    assert run(kernel, "print(client.submit(sum, [1, 2, 3]).result())").strip() == "6"

    # Without the login: nothing, over HTTP or the websocket.
    stranger = serving.client()
    attempts = [stranger.session.get(proxied(serving, link), allow_redirects=False, timeout=30),
                stranger.session.get(f"{root}/individual-plots.json", allow_redirects=False,
                                     timeout=30),
                stranger.session.get(f"{root}/individual-task-stream", allow_redirects=False,
                                     timeout=30)]
    assert [a.status_code for a in attempts if a.status_code == 200] == [], \
        [a.status_code for a in attempts]
    assert not any(a.text.count("Dask") for a in attempts)
    assert not websocket_opens(f"{root}/status/ws", serving.ca)
    assert stranger.session.get(f"{serving.base}/dask/clusters", timeout=30).status_code == 403
    assert user.session.get(f"{serving.base}/dask/clusters", timeout=30).json() == []
    # Logged in, the proxy still reaches the dashboard alone: not Jupyter, not any other port, not
    # the dashboard's port by a name (localhost may be a ::1 anybody can bind).
    scheduler_port = urllib.parse.urlsplit(cluster["scheduler"]).port
    for other in (f"/proxy/127.0.0.1:{serving.port}/api", f"/proxy/127.0.0.1:{scheduler_port}/",
                  f"/proxy/localhost:{port}/status", f"/proxy/127.0.0.2:{port}/status"):
        assert user.session.get(serving.base + other, timeout=30).status_code == 403, other
    # jupyter-server-proxy's other forms are not there at all.
    for other in (f"/proxy/{serving.port}/api", f"/proxy/{port}/status", "/server-proxy/servers-info",
                  f"/proxy/absolute/127.0.0.1:{port}/status"):
        assert user.session.get(serving.base + other, timeout=30).status_code == 404, other
    # Only read: no other method, and no service worker (which could claim the login page).
    refused = [user.session.post(f"{root}/status", timeout=30,
                                 headers={"X-XSRFToken": user.session.cookies.get("_xsrf")}),
               user.session.get(f"{root}/statics/x.js", timeout=30,
                                headers={"Service-Worker": "script"})]
    assert [r.status_code for r in refused] == [403, 403], [r.status_code for r in refused]


def test_while_the_cluster_is_down_another_user_on_its_dashboard_port_gets_nothing_through(
        serve, folder) -> None:
    """Between a crash and the restart, the dashboard's port is anybody's to take: the proxy reaches
    it only while a process of the account listens there, and the cluster refuses to move."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the squatter must be another user than the account")
    serving = serve(dask={"enabled": True})
    port = json.loads((folder / "run" / "dask-ports.json").read_text())["dashboard"]
    user = serving.logged_in_client()
    link = f"{serving.base}/proxy/127.0.0.1:{port}/status"
    wait_until(lambda: user.session.get(link, timeout=30).status_code == 200, 60,
               "the dashboard through the proxy", interval=0.5)
    jupyter = psutil.Process(serving.daemon.status()["jupyter_pid"])
    cluster = next(p for p in jupyter.children() if "local_cluster.py" in " ".join(p.cmdline()))
    below = [cluster, *cluster.children(recursive=True)]
    squatter = None
    try:
        for process in below:
            process.kill()
        psutil.wait_procs(below, timeout=15)
        squatter = socket.create_server(("127.0.0.1", port))  # root: not the account
        threading.Thread(target=_answer_squatted, args=(squatter,), daemon=True).start()
        for _ in range(3):
            answer = user.session.get(link, timeout=30)
            assert answer.status_code == 403 and "SQUATTER" not in answer.text, answer.status_code
        # The restarted cluster does not take another port for its dashboard: it says why, and stops.
        wait_until(lambda: "is taken by another program" in serving.daemon.log(), 60,
                   "the restarted cluster to refuse the taken port", interval=0.5)
    finally:
        if squatter is not None:
            squatter.close()


def _answer_squatted(server: socket.socket) -> None:
    while True:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        with connection:
            connection.recv(4096)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSQUATTER")


class SeparateScheduler:
    """A scheduler and one worker in processes of their own, as a cluster on other machines would
    be: TLS with the cluster CA's identity, and a test route on the dashboard that echoes the
    headers reaching it."""

    def __init__(self, tls, folder: Path, port: int) -> None:
        self.port, self.dashboard = port, free_port()
        self.address = f"tls://127.0.0.1:{self.port}"
        routes = ["distributed.http.scheduler.info", "distributed.http.scheduler.json",
                  "distributed.http.health", "distributed.http.statics", "echo_headers"]
        env = {"PATH": os.environ["PATH"], "HOME": str(folder), "PYTHONPATH": str(DATA),
               "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": repr(routes)}
        credentials = ["--tls-ca-file", str(tls.ca), "--tls-cert", str(tls.cert),
                       "--tls-key", str(tls.key)]
        python = [sys.executable, "-m"]
        self.log = folder / "separate-cluster.log"
        log = self.log.open("ab")
        self.processes = [subprocess.Popen(
            [*python, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port",
             str(self.port), "--protocol", "tls", "--dashboard-address",
             f"127.0.0.1:{self.dashboard}", *credentials],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)]
        self.processes.append(subprocess.Popen(
            [*python, "distributed.cli.dask_worker", self.address, "--host", "127.0.0.1",
             "--nworkers", "1", "--nthreads", "1", "--no-dashboard", *credentials],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log))
        log.close()

    def close(self) -> None:
        for process in reversed(self.processes):
            stop_tree(process, 15)


@pytest.fixture
def separate_scheduler(folder: Path) -> Iterator[Callable[..., SeparateScheduler]]:
    started: list[SeparateScheduler] = []

    def start(port: int | None = None) -> SeparateScheduler:
        started.append(SeparateScheduler(files(folder / "state"), folder, port or free_port()))
        return started[-1]

    yield start
    for scheduler in started:
        scheduler.close()


def test_the_same_notebook_code_uses_a_separate_scheduler_when_one_setting_names_it(
        make_settings, start_daemon, separate_scheduler, folder) -> None:
    port, scheduler_port = free_port(), free_port()
    settings = make_settings(server={"port": port},
                             dask={"enabled": True, "cluster": f"tls://127.0.0.1:{scheduler_port}"})
    daemon = start_daemon(settings)
    daemon.wait_ready()
    serving = Serving(daemon, settings, folder, port)
    # The identity the daemon made; the scheduler is started with it, as a user would.
    scheduler = separate_scheduler(scheduler_port)
    user = serving.logged_in_client()
    kernel, cluster = connected(serving, user, workers=1)
    assert cluster["scheduler"] == f"tls://127.0.0.1:{scheduler_port}", cluster
    assert len(cluster["workers"]) == 1, cluster
    assert run(kernel, "print(client.submit(sum, [4, 5]).result())").strip() == "9"
    link = cluster["link"]
    assert link == f"https://127.0.0.1:{port}/proxy/127.0.0.1:{scheduler.dashboard}/status", link
    # The daemon's Jupyter asks the scheduler where its dashboard is, within seconds.
    wait_until(lambda: user.session.get(proxied(serving, link), timeout=30).status_code == 200,
               30, "the separate scheduler's dashboard through the proxy", interval=1)
    # What reaches the dashboard carries nothing of the login.
    root = proxied(serving, link).removesuffix("/status")
    assert any(c.name.startswith("username-") for c in user.session.cookies), user.session.cookies
    echoed = user.session.get(f"{root}/echo-headers", timeout=30,
                              headers={"X-XSRFToken": user.session.cookies.get("_xsrf")})
    assert echoed.status_code == 200, echoed.text[:300]
    reached = {name.lower(): value for name, value in echoed.json().items()}
    assert "cookie" not in reached and "x-xsrftoken" not in reached, reached
    assert "username-" not in json.dumps(reached) and "_xsrf" not in json.dumps(reached)
    stranger = serving.client()
    for path in ("/status", "/echo-headers", "/individual-plots.json"):
        response = stranger.session.get(root + path, allow_redirects=False, timeout=30)
        assert response.status_code != 200 and "username" not in response.text, path
    # Who follows the link unlogged is sent to the login, and after it to the dashboard (a path
    # with a colon, which Jupyter's own check would have turned into ".../127.0.0.1://...").
    bounced = stranger.session.get(proxied(serving, link), allow_redirects=False, timeout=30)
    assert bounced.status_code == 302 and "/login?next=" in bounced.headers["Location"]
    stranger.session.get(f"{serving.base}/login", timeout=10)
    back = stranger.session.post(
        serving.base + bounced.headers["Location"], allow_redirects=False, timeout=30,
        data={"password": serving.password, "_xsrf": stranger.session.cookies.get("_xsrf")})
    assert back.status_code == 302 and back.headers["Location"] == urllib.parse.urlsplit(link).path


def test_without_the_cluster_identity_nobody_can_use_the_local_scheduler(serve, folder) -> None:
    """Another user of the machine reaches the loopback port, but not the cluster: mutual TLS."""
    serve(dask={"enabled": True})
    port = json.loads((folder / "run" / "dask-ports.json").read_text())["scheduler"]
    tls = files(folder / "state")
    wait_until(lambda: _tls_handshake(port, tls.ca, (tls.cert, tls.key)), 60,
               "the local scheduler to answer its own cluster", interval=0.5)
    assert not _tls_handshake(port, tls.ca, None)
    # A certificate of another CA (the web server's) is no better.
    web = folder / "state" / "tls" / "live"
    assert not _tls_handshake(port, tls.ca, (web / "fullchain.pem", web / "privkey.pem"))


def _tls_handshake(port: int, ca: Path, identity: tuple[Path, Path] | None) -> bool:
    """Whether a TLS session with the scheduler opens and it then talks (it speaks first after
    the handshake in no protocol, so a read that times out means it kept the connection)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    if identity:
        context.load_cert_chain(*map(str, identity))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw) as wrapped:
            wrapped.settimeout(1)
            try:
                return wrapped.recv(1) != b""
            except TimeoutError:
                return True  # still open: accepted
    except (OSError, ssl.SSLError):
        return False


def test_a_pip_upgrade_of_distributed_in_a_notebook_is_refused_naming_the_pin(
        serve, folder, account) -> None:
    from test_kernel_env import build_wheel

    serving = serve(dask={"enabled": True})
    constraints = account.home / ".local/share/jupyter-remote/python/kernel-constraints.txt"
    wait_until(lambda: "distributed==" in constraints.read_text(), 120,
               "the notebooks' environment to pin distributed", interval=0.5)
    wheels = folder / "wheels"
    wheels.mkdir(mode=0o755)
    build_wheel(wheels, "distributed", "99.0", "raise ImportError('a mismatched distributed')\n")
    kernel = notebook(serving)
    output = kernel.execute(f"%pip install --no-index --find-links {wheels} distributed==99.0\n",
                            120)
    assert "(constraint) distributed==" in output and "Successfully installed" not in output, \
        output
    assert run(kernel, "import distributed; print(distributed.__version__)").strip() != "99.0"


def test_scheduler_workers_and_dashboard_refuse_another_machine(
        make_settings, start_daemon, folder, two_workers) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: makes network namespaces")
    here = NetworkNamespace()  # this machine, at 198.51.100.7
    there = here.peer()  # another machine on its network, at 198.51.100.8
    try:
        settings = make_settings(server={"ip": "0.0.0.0"}, dask={"enabled": True})
        daemon = start_daemon(settings, prefix=here.prefix)
        daemon.wait_ready()
        ports = json.loads((folder / "run" / "dask-ports.json").read_text())

        jupyter_port = settings_port(settings)

        def listening_beside_jupyter() -> list[tuple[str, int]] | None:
            """Every listening TCP socket of this machine's network namespace but Jupyter's,
            once the scheduler, its dashboard, and two workers with their nannies are up."""
            jupyter = daemon.status()["jupyter_pid"]
            found = [s for s in listening_sockets(jupyter) if s[1] != jupyter_port]
            return found if len(found) >= 6 else None

        listening = wait_until(listening_beside_jupyter, 60, "the local cluster's sockets",
                               interval=0.5)
        assert {address for address, _ in listening} == {"127.0.0.1"}, listening
        assert {ports["scheduler"], ports["dashboard"]} <= {port for _, port in listening}

        def reaches(port: int) -> bool:
            try:
                socket.create_connection((here.address, port), timeout=5).close()
            except OSError:
                return False
            return True

        # The other machine reaches Jupyter, so the network works; nothing of Dask.
        assert there.run(lambda: reaches(jupyter_port))
        assert there.run(lambda: [port for _, port in listening if reaches(port)]) == []
    finally:
        there.close()
        here.close()


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of each listening TCP socket in the network namespace of process `pid`,
    from its /proc/<pid>/net/tcp and tcp6 (psutil reads the caller's namespace)."""
    found = []
    for table, size in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((str(ipaddress.ip_address(raw if size == 16 else raw[:4])), int(port, 16)))
    return found


# The rows of the dashboard's task stream, as the page's own Bokeh document holds them (it reaches
# the page over the dashboard's websocket): -1 while there is no such plot.
TASK_STREAM_ROWS = """
if (!window.Bokeh || !Bokeh.documents.length) { return -1; }
for (const doc of Bokeh.documents) {
  for (const model of doc.all_models) {
    const data = model.data;
    if (!data) { continue; }
    const column = (name) => data instanceof Map ? data.get(name) : data[name];
    if (column("worker_thread") !== undefined && column("duration") !== undefined) {
      return column("duration").length;
    }
  }
}
return -1;
"""


def test_the_browser_opens_the_dashboard_link_a_notebook_prints_and_sees_the_task_stream(
        serve, two_workers, folder) -> None:
    from selenium.webdriver.common.by import By

    serving = serve(dask={"enabled": True})
    kernel, cluster = connected(serving, serving.logged_in_client(), workers=2)
    link = cluster["link"]
    screenshots = Path(os.environ.get("JUPYTER_REMOTE_SCREENSHOTS", folder))
    with chromium() as browser:
        # The link as a user clicks it: the login first, then straight to the dashboard.
        browser.get(link)
        wait_until(lambda: browser.find_elements(By.NAME, "password"), 30, "the login form",
                   interval=0.2)
        browser.find_element(By.NAME, "password").send_keys(serving.password)
        browser.find_element(By.ID, "login_submit").click()
        try:
            wait_until(lambda: browser.current_url == link, 30, "the dashboard after the login",
                       interval=0.2)
        except AssertionError:
            raise AssertionError(f"at {browser.current_url}, not {link}") from None
        wait_until(lambda: browser.execute_script(TASK_STREAM_ROWS) >= 0, 60,
                   "the task stream plot", interval=0.5)
        # Work from the notebook, watched as it runs.
        run(kernel, "import time\nclient.gather(client.map(time.sleep, [0.1] * 20, pure=False))")
        wait_until(lambda: browser.execute_script(TASK_STREAM_ROWS) >= 20, 30,
                   "the 20 tasks in the task stream", interval=0.5)
        browser.save_screenshot(str(screenshots / "dask-dashboard.png"))

        # JupyterLab's Dask panel: the dashboard found without a step, its panes open in a tab.
        browser.get(f"{serving.base}/lab")
        wait_until(lambda: browser.find_elements(By.CSS_SELECTOR,
                                                 'li[data-id="dask-dashboard-launcher"]'),
                   60, "JupyterLab's Dask tab", interval=0.5)
        browser.find_element(By.CSS_SELECTOR, 'li[data-id="dask-dashboard-launcher"]').click()

        def task_stream_button():
            buttons = [b for b in browser.find_elements(By.CSS_SELECTOR,
                                                        ".dask-DashboardListing-item")
                       if b.text.strip().lower() == "task stream"]
            return buttons[0] if buttons and buttons[0].is_enabled() else None

        try:
            wait_until(task_stream_button, 60, "the Dask panel's Task Stream button", interval=0.5)
        finally:
            browser.save_screenshot(str(screenshots / "dask-jupyterlab-panel.png"))
        # And no error dialog about a missing server part (its cluster list answers: none).
        assert not browser.find_elements(By.CSS_SELECTOR, ".jp-Dialog"), \
            [d.text for d in browser.find_elements(By.CSS_SELECTOR, ".jp-Dialog")]
        task_stream_button().click()
        frame = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".dask-DaskDashboard-widget iframe"),
                           30, "the Task Stream pane", interval=0.5)[0]
        browser.switch_to.frame(frame)
        wait_until(lambda: browser.execute_script(TASK_STREAM_ROWS) >= 0, 60,
                   "the pane's task stream plot", interval=0.5)
        run(kernel, "client.gather(client.map(time.sleep, [0.1] * 20, pure=False))")
        wait_until(lambda: browser.execute_script(TASK_STREAM_ROWS) >= 20, 30,
                   "the 20 tasks in the pane", interval=0.5)
        browser.switch_to.default_content()
        browser.save_screenshot(str(screenshots / "dask-jupyterlab-pane.png"))
