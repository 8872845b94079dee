"""`jupyter-remote run` as systemd runs it: real Jupyter, real TLS, a real NOTIFY_SOCKET."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import ssl
import time
from pathlib import Path

import psutil
import requests

from conftest import Serving, settings_port
from support import cli, free_port, wait_until


def api_answers(base: str, ca: str) -> bool:
    session = requests.Session()
    session.trust_env = False
    try:
        return session.get(f"{base}/api", verify=ca, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def test_ready_means_serving_verified_tls_and_a_working_kernel(make_settings, start_daemon,
                                                               folder):
    settings = make_settings()
    port = settings_port(settings)
    base, ca = f"https://127.0.0.1:{port}", str(folder / "state" / "tls" / "ca" / "ca.pem")
    at_ready: list[bool] = []

    def ask_at_once(message: str) -> None:
        # The moment READY=1 arrives, not later: a premature READY would find nothing serving.
        if message == "READY=1" and not at_ready:
            at_ready.append(api_answers(base, ca))

    daemon = start_daemon(settings, on_notify=ask_at_once)
    daemon.wait_ready()
    serving = Serving(daemon, settings, folder, port)
    wait_until(lambda: at_ready, 10, "the check made at READY=1")
    assert at_ready == [True]
    lines = serving.daemon.notify.lines()
    ready = lines.index("READY=1")
    assert f"STATUS=Serving https://127.0.0.1:{serving.port}/lab" in lines[ready:]
    assert any(line.startswith("EXTEND_TIMEOUT_USEC=") for line in lines[:ready])

    client = serving.logged_in_client()
    assert client.logged_in()
    kernel = client.kernel(client.start_kernel())
    assert kernel.execute("print(6 * 7)").strip() == "42"
    kernel.close()

    stranger = serving.client()
    assert stranger.login("not the password").status_code == 401
    assert not stranger.logged_in()


def test_first_start_password_file_and_no_secret_in_logs_commands_or_environments(serving):
    initial = serving.settings.parent / "initial-password"
    hash_file = serving.settings.parent / "password"
    assert initial.stat().st_mode & 0o777 == 0o600
    assert hash_file.stat().st_mode & 0o777 == 0o600
    password, hashed = serving.password, hash_file.read_text().strip()
    assert hashed.startswith("argon2:$argon2id$")
    log = serving.daemon.log()
    assert str(initial) in log
    secrets = (password, hashed, hashed.split("$")[-1])
    assert not any(s in log for s in secrets)
    client = serving.logged_in_client()
    client.kernel(client.start_kernel()).execute("1")
    processes = [psutil.Process(serving.daemon.process.pid), *serving.daemon.tree()]
    assert len(processes) >= 3  # the daemon, Jupyter and a kernel at least
    for process in processes:
        cmdline = " ".join(process.cmdline())
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().decode(errors="replace")
        assert not any(s in cmdline or s in environ for s in secrets), process
    jupyter = psutil.Process(serving.daemon.status()["jupyter_pid"])
    assert jupyter.uids().real != 0


def test_watchdog_pings_well_within_the_interval(make_settings, start_daemon):
    # What systemd enforces: a ping before WatchdogSec= (4 s here) has passed, every time.
    daemon = start_daemon(make_settings(), WATCHDOG_USEC="4000000")
    daemon.wait_ready()
    first = daemon.notify.wait_for("WATCHDOG=1", 10)
    time.sleep(10)
    pings = [t for t, m in daemon.notify.messages if m == "WATCHDOG=1" and t >= first]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert len(pings) >= 4 and max(gaps) < 4.0, gaps


def test_status_json_and_exit_codes(serving, make_settings):
    result = cli("status", "--json", "--settings", str(serving.settings))
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert set(data) == {"state", "pid", "jupyter_pid", "url", "started", "restarts", "cert_days_left",
                         "last_error", "idle_seconds", "idle_action_at", "restart_pending"}
    assert data["restart_pending"] is None and data["idle_seconds"] is None
    assert data["state"] == "running" and data["pid"] == serving.daemon.process.pid
    assert data["cert_days_left"] in (364, 365)
    assert psutil.pid_exists(data["jupyter_pid"])
    stopped = make_settings("other.toml", paths={"runtime_dir": str(serving.folder / "elsewhere")})
    result = cli("status", "--settings", str(stopped))
    assert result.returncode == 3 and "not running" in result.stderr


def test_kill_9_of_jupyter_restarts_it_with_backoff(serving):
    old = serving.daemon.status()["jupyter_pid"]
    os.kill(old, signal.SIGKILL)
    serving.daemon.wait_ready(after=1, timeout=60)
    status = serving.daemon.status()
    assert status["jupyter_pid"] != old and status["restarts"] == 1
    assert api_answers(serving.base, serving.ca)
    assert any("killed by SIGKILL; restarting in 1 s" in line for line in serving.daemon.notify.lines())


def test_a_stopped_jupyter_is_detected_and_replaced(serving):
    old = serving.daemon.status()["jupyter_pid"]
    os.kill(old, signal.SIGSTOP)
    serving.daemon.wait_ready(after=1, timeout=60)
    assert not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE
    assert "stopped answering" in serving.daemon.log()
    assert api_answers(serving.base, serving.ca)


def test_busy_port_is_a_clear_error_retried_never_another_port(make_settings, start_daemon):
    settings = make_settings()
    port = settings_port(settings)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    daemon = start_daemon(settings)
    try:
        # Taken after the daemon's own look at the port and before Jupyter binds it (Jupyter
        # takes a second to import): Jupyter itself meets the busy port, with port_retries = 0.
        wait_until(lambda: "Jupyter started as" in daemon.log(), 30, "Jupyter spawned")
        holder.bind(("127.0.0.1", port))
        holder.listen()
        wait_until(lambda: daemon.log().count(f"port {port} on 127.0.0.1 is in use") >= 2, 60,
                   "two failed attempts")
        assert not daemon.notify.count("READY=1")
        listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == "LISTEN"
                     and c.pid in {p.pid for p in daemon.tree()}}
        assert listening == set()
    finally:
        holder.close()
    daemon.wait_ready(timeout=90)  # the port came free: it serves there, and only there


def test_missing_jupyter_executable_is_a_clear_settings_error(make_settings, folder):
    settings = make_settings(server={"jupyter": str(folder / "no-such-jupyter")})
    result = cli("run", "--settings", str(settings), timeout=30)
    assert result.returncode == 78
    assert f'[server] jupyter: not an executable file, got "{folder}/no-such-jupyter"' in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_everything_even_detached_processes(serving):
    client = serving.logged_in_client()
    kernels = [client.kernel(client.start_kernel()) for _ in range(2)]
    # A kernel detaches a process into a session of its own, as `nohup ... &` in a terminal would.
    kernels[0].execute("import subprocess; subprocess.Popen(['sleep', '600'], start_new_session=True)")
    tree = [p.pid for p in serving.daemon.tree()]
    assert len(tree) >= 4
    serving.daemon.signal(signal.SIGTERM)
    assert serving.daemon.process.wait(30) == 0
    assert "STOPPING=1" in serving.daemon.notify.lines()
    survivors = [pid for pid in tree if psutil.pid_exists(pid) and
                 psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert survivors == []


def test_reload_moves_the_port_and_a_bad_edit_keeps_serving(serving):
    settings = serving.settings
    text = settings.read_text()
    # A typo: rejected with the key named, exit 78, and the old settings still serve.
    settings.write_text(text.replace("[tls]", "[tls]\nmod = \"off\""))
    result = cli("reload", "--settings", str(settings))
    assert result.returncode == 78, result.stderr
    assert '[tls] mod: unknown key (did you mean mode?)' in result.stderr
    assert api_answers(serving.base, serving.ca)
    assert serving.daemon.notify.count("RELOADING=1") == 0  # sent with MONOTONIC_USEC, see below
    assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in serving.daemon.notify.lines())
    # A new port: Jupyter restarts there.
    new_port = free_port()
    settings.write_text(text.replace(f"port = {serving.port}", f"port = {new_port}"))
    result = cli("reload", "--settings", str(settings))
    assert result.returncode == 0, result.stderr
    assert api_answers(f"https://127.0.0.1:{new_port}", serving.ca)
    assert not api_answers(serving.base, serving.ca)
    assert serving.daemon.notify.count("READY=1") >= 3  # start, rejected reload, applied reload


def test_cert_renew_reaches_new_connections_without_a_restart(serving):
    def served_fingerprint() -> str:
        context = ssl.create_default_context(cafile=serving.ca)
        with (socket.create_connection(("127.0.0.1", serving.port), timeout=5) as raw,
              context.wrap_socket(raw, server_hostname="127.0.0.1") as tls):
            import hashlib

            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()

    before = served_fingerprint()
    jupyter_pid = serving.daemon.status()["jupyter_pid"]
    result = cli("cert", "renew", "--settings", str(serving.settings))
    assert result.returncode == 0, result.stderr
    wait_until(lambda: served_fingerprint() != before, 5, "the new certificate")
    assert serving.daemon.status()["jupyter_pid"] == jupyter_pid


def test_an_upgrade_marker_makes_status_and_log_say_a_restart_is_pending(serving):
    (serving.folder / "run" / "restart-pending").write_text("9.9.9\n")

    def said() -> bool:
        result = cli("status", "--settings", str(serving.settings))
        return "restart pending: upgraded to 9.9.9" in result.stdout

    wait_until(said, 10, "status to say a restart is pending")
    assert "jupyter-remote was upgraded to 9.9.9: restart when convenient" in serving.daemon.log()
    assert serving.daemon.status()["restarts"] == 0  # nothing was restarted on its own


def test_a_start_slower_than_start_timeout_counts_as_failed(make_settings, start_daemon):
    daemon = start_daemon(make_settings(supervise={"start_timeout": 1, "health_interval": 1}))
    wait_until(lambda: "did not answer within start_timeout (1 s)" in daemon.log(), 30, "a failed start")
    assert daemon.notify.count("READY=1") == 0
    assert any(m.startswith("STATUS=Jupyter did not answer within start_timeout") for m in daemon.notify.lines())


def test_a_reload_asked_for_during_start_up_waits_for_the_start(make_settings, start_daemon):
    daemon = start_daemon(make_settings())
    daemon.notify.wait_for("STATUS=Starting Jupyter", 30)
    daemon.signal(signal.SIGHUP)
    daemon.wait_ready()
    daemon.wait_ready(after=1, timeout=30)  # the reload's own READY=1, after the start's
    lines = daemon.notify.lines()
    first_ready = lines.index("READY=1")
    reloading = next(i for i, m in enumerate(lines) if m.startswith("RELOADING=1"))
    assert first_ready < reloading
    assert "reload asked for during start-up" in daemon.log()


def test_sighup_applies_a_new_inline_password_without_restarting_jupyter(serving):
    client = serving.logged_in_client()
    kernel = client.kernel(client.start_kernel())
    kernel.execute("kept = 7")
    jupyter_pid = serving.daemon.status()["jupyter_pid"]
    hashed = cli("password", "--stdin", "--print", "--settings", str(serving.settings),
                 stdin="via sighup\n").stdout.strip()
    serving.settings.write_text(serving.settings.read_text() + f"[auth]\npassword_hash = '{hashed}'\n")
    serving.daemon.signal(signal.SIGHUP)
    serving.daemon.wait_ready(after=1, timeout=30)
    wait_until(lambda: serving.client().login("via sighup").status_code == 302, 10, "the new password")
    assert serving.daemon.status()["jupyter_pid"] == jupyter_pid
    assert kernel.execute("print(kept)").strip() == "7"


def test_jupyter_starts_when_the_account_has_an_ipython_folder(make_settings, start_daemon, account):
    # jupyter_core then wants to write a migration marker into the config folder, which the
    # account may not write: the daemon provides the marker, or every restart after a kernel fails.
    ipython = account.home / ".ipython"
    ipython.mkdir(exist_ok=True)
    os.chown(ipython, account.uid, -1)
    daemon = start_daemon(make_settings())
    daemon.wait_ready()
    assert "PermissionError" not in daemon.log()
