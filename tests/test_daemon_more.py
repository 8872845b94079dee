"""More of what `jupyter-remote run` promises, end to end through a real daemon and a real Jupyter:
the password alone, live limits, a Jupyter that can no longer be run, root_dir, base_url, "::" and
extra_args."""

from __future__ import annotations

import os
import signal
import stat
import sys
import uuid
from pathlib import Path

import psutil
import pytest
import requests

from support import JupyterClient, cli, free_port, wait_until


def session(ca: str) -> requests.Session:
    made = requests.Session()
    made.trust_env = False  # this machine sets REQUESTS_CA_BUNDLE; we pin our own CA
    made.verify = ca
    return made


def answers(url: str, ca: str) -> bool:
    try:
        return session(ca).get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def wrong_login(client: JupyterClient) -> int:
    return client.login(f"wrong-{uuid.uuid4().hex}").status_code


def edit(settings: Path, old: str, new: str) -> None:
    text = settings.read_text()
    assert old in text, old
    settings.write_text(text.replace(old, new))


def test_password_applies_the_password_alone_and_no_pending_edit(serving):
    old_password = serving.password
    client = serving.logged_in_client()
    kernel = client.kernel(client.start_kernel())
    kernel.execute("state = 'kept'")
    jupyter_pid = serving.daemon.status()["jupyter_pid"]
    # An edit the operator has not asked to apply yet: a new port, which would restart Jupyter.
    other_port = free_port()
    edit(serving.settings, f"port = {serving.port}", f"port = {other_port}")

    result = cli("password", "--stdin", "--settings", str(serving.settings), stdin="only this\n")
    assert result.returncode == 0, result.stderr
    assert not (serving.settings.parent / "initial-password").exists()
    wait_until(lambda: serving.client().login("only this").status_code == 302, 20,
               "the new password to work on the port that serves")
    assert serving.client().login(old_password).status_code == 401
    assert not client.logged_in()  # the old session ended with the old password
    status = serving.daemon.status()
    assert status["jupyter_pid"] == jupyter_pid and status["restarts"] == 0, status
    assert kernel.execute("print(state)").strip() == "kept"
    assert not answers(f"https://127.0.0.1:{other_port}/api", serving.ca)
    assert serving.daemon.notify.count("READY=1") == 1  # no reload happened
    kernel.close()


def test_reload_changes_the_login_limit_and_culling_live(serve):
    server = serve(auth={"rate_limit_per_minute": 2})
    jupyter_pid = server.daemon.status()["jupyter_pid"]
    user = server.logged_in_client()
    kernel_id = user.start_kernel()
    attacker = server.client()
    assert [wrong_login(attacker) for _ in range(3)] == [401, 401, 429]

    edit(server.settings, "rate_limit_per_minute = 2", "rate_limit_per_minute = 5")
    server.settings.write_text(server.settings.read_text() + "[kernel]\ncull_idle_minutes = 1\n")
    result = cli("reload", "--settings", str(server.settings))
    assert result.returncode == 0, result.stderr
    # The limit is read within a second: the two failures counted stay, three more are allowed.
    wait_until(lambda: "idle kernels are culled after 1 minutes" in server.daemon.log(), 10,
               "the extension to apply the new settings")
    assert [wrong_login(attacker) for _ in range(4)] == [401, 401, 401, 429]

    edit(server.settings, "rate_limit_per_minute = 5", "rate_limit_per_minute = 0")
    assert cli("reload", "--settings", str(server.settings)).returncode == 0
    wait_until(lambda: wrong_login(attacker) == 401, 10, "the limit to be switched off")
    assert server.daemon.status()["jupyter_pid"] == jupyter_pid

    def culled() -> bool:
        kernels = user.session.get(f"{server.base}/api/kernels", timeout=10).json()
        return kernel_id not in {kernel["id"] for kernel in kernels}

    # Idle for a minute, then found by the culler, which looks once a minute.
    wait_until(culled, 200, "the idle kernel to be culled", interval=2)
    status = server.daemon.status()
    assert status["jupyter_pid"] == jupyter_pid and status["restarts"] == 0


def test_a_jupyter_that_can_no_longer_be_run_is_fatal_and_leaves_nothing(make_settings,
                                                                          start_daemon, folder):
    jupyter = folder / "bin" / "jupyter"
    jupyter.parent.mkdir()
    jupyter.symlink_to(Path(sys.executable).parent / "jupyter")
    daemon = start_daemon(make_settings(server={"jupyter": str(jupyter)}))
    daemon.wait_ready()
    tree = [process.pid for process in daemon.tree()]
    jupyter.unlink()  # an uninstalled Anaconda, say
    os.kill(daemon.status()["jupyter_pid"], signal.SIGKILL)
    assert daemon.process.wait(60) == 1
    assert f"cannot run Jupyter: {jupyter} is not an executable file" in daemon.log()
    assert "Traceback" not in daemon.log()
    left = [pid for pid in tree if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert left == []
    assert any(line.startswith("STATUS=Failed: cannot run Jupyter") for line in daemon.notify.lines())


def test_a_root_dir_the_account_cannot_make_is_a_clear_error_and_the_daemon_stays(
        make_settings, start_daemon, folder, account):
    if account.uid == os.geteuid():
        pytest.skip("as a user, the account is ours and may make any folder we may")
    closed = folder / "root-only"
    closed.mkdir(mode=0o755)
    root_dir = closed / "notebooks"
    daemon = start_daemon(make_settings(server={"root_dir": str(root_dir)}))
    wait_until(lambda: f"cannot make root_dir {root_dir} as {account.name}: mkdir: cannot create "
               f"directory" in daemon.log(), 60, "the daemon to say it cannot make root_dir")

    def backing_off() -> bool:
        status = daemon.status()
        return status["state"] == "backoff" and status["restarts"] >= 1 and status["last_error"]

    wait_until(backing_off, 60, "the daemon to retry Jupyter, not to end")
    assert daemon.process.poll() is None
    assert f"cannot make root_dir {root_dir}" in daemon.status()["last_error"]
    root_dir.mkdir()  # the operator makes it: the next attempt serves
    os.chown(root_dir, account.uid, -1)
    daemon.wait_ready(timeout=120)
    assert daemon.status()["state"] == "running"


def test_base_url_serves_login_and_api_under_it(serve):
    server = serve(server={"base_url": "/jr/"})
    assert server.daemon.status()["url"].endswith("/jr/lab")
    client = JupyterClient(f"{server.base}/jr", server.ca)
    assert client.login(server.password).status_code == 302
    assert client.logged_in()
    assert client.session.get(f"{server.base}/api/status", timeout=10).status_code == 404
    kernel = client.kernel(client.start_kernel())
    assert kernel.execute("print(6 * 7)").strip() == "42"
    kernel.close()


def test_ip_all_serves_both_loopbacks(serve):
    server = serve(server={"ip": "::"})
    for host in ("127.0.0.1", "[::1]"):
        client = JupyterClient(f"https://{host}:{server.port}", server.ca)
        assert client.login(server.password).status_code == 302, host
        assert client.logged_in(), host


def test_extra_args_reach_jupyter(serve):
    server = serve(server={"extra_args": ["--ServerApp.max_body_size=65536"]})
    client = server.logged_in_client()

    def put(size: int) -> int:
        try:
            return client.session.put(
                f"{server.base}/api/contents/upload.txt", timeout=30,
                json={"type": "file", "format": "text", "content": "x" * size},
                headers={"X-XSRFToken": client.session.cookies.get("_xsrf", "")},
            ).status_code
        except requests.ConnectionError:
            return 0  # the server hung up on it

    assert put(1000) in (200, 201)
    assert put(200_000) not in (200, 201)  # larger than Jupyter now takes
    mode = (server.folder / "notebooks" / "upload.txt").stat()
    assert stat.S_ISREG(mode.st_mode) and mode.st_size == 1000
