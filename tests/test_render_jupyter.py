"""The rendered config makes a real Jupyter server that demands the password, whatever ~/.jupyter says."""

from __future__ import annotations

from pathlib import Path

import subprocess

import pytest

from supervisor import child
from supervisor.layout import layout_of
from supervisor.loading import load
from supervisor.passwords import hash_password
from conftest import settings_port
from support import JupyterClient


@pytest.fixture
def jupyter(make_settings, start_daemon, folder: Path, account):
    """A real `jupyter lab` with the rendered config (plain HTTP on loopback), run as the account."""
    settings = make_settings(tls={"mode": "off"})
    (folder / "password").write_text(hash_password("right password") + "\n")
    # A stray config in the account's own ~/.jupyter tries to weaken everything.
    stray = account.home / ".jupyter"
    stray.mkdir(exist_ok=True)
    written = {
        "jupyter_server_config.py": "c.ServerApp.disable_check_xsrf = True\n"
        "c.IdentityProvider.token = 'stray-token'\n"
        "c.PasswordIdentityProvider.password_required = False\n"
        "c.PasswordIdentityProvider.hashed_password = ''\n"
        "c.ServerApp.port_retries = 50\n",
        "jupyter_lab_config.py": "c.ServerApp.disable_check_xsrf = True\n",
    }
    for name, text in written.items():
        (stray / name).write_text(text)
    daemon = start_daemon(settings)
    try:
        daemon.wait_ready()
        yield f"http://127.0.0.1:{settings_port(settings)}", daemon, settings
    finally:
        for name in written:
            (stray / name).unlink(missing_ok=True)


def test_login_form_demands_the_password_and_stray_config_cannot_weaken_it(jupyter):
    base, _, _ = jupyter
    anonymous = JupyterClient(base, verify=False)
    assert anonymous.session.get(f"{base}/api/status", timeout=10).status_code == 403
    assert anonymous.session.get(f"{base}/api/status?token=stray-token", timeout=10).status_code == 403

    wrong = JupyterClient(base, verify=False)
    assert wrong.login("wrong password").status_code == 401
    assert not wrong.logged_in()

    right = JupyterClient(base, verify=False)
    response = right.login("right password")
    assert response.status_code == 302
    assert right.logged_in()
    # XSRF is still checked: a POST without the header is refused even when logged in.
    no_xsrf = right.session.post(f"{base}/api/kernels", json={}, timeout=10)
    assert no_xsrf.status_code == 403
    kernel = right.kernel(right.start_kernel())
    assert kernel.execute("print('hello')").strip() == "hello"
    kernel.close()


def test_no_deprecated_password_or_token_settings(jupyter, folder):
    base, daemon, _ = jupyter
    assert JupyterClient(base, verify=False).login("right password").status_code == 302
    log = daemon.log()
    assert "ServerApp]" in log  # Jupyter's own log is there to read
    for deprecated in ("ServerApp.password", "ServerApp.token", "deprecated"):
        assert deprecated not in log, deprecated
    config_text = (folder / "run" / "jupyter" / "jupyter_server_config.json").read_text()
    assert '"password"' not in config_text.replace('"hashed_password"', "")
    assert "NotebookApp" not in config_text


def test_a_busy_port_makes_jupyter_exit_not_move_whatever_the_stray_config_says(jupyter):
    """The daemon checks the port itself before each start, so here Jupyter meets a busy port
    directly: a second one, started exactly as the daemon starts it (same command, environment
    and config folder, the stray ~/.jupyter asking for port_retries = 50), while the first holds it.
    """
    _, _, settings_file = jupyter
    settings = load(settings_file)
    layout = layout_of(settings)
    argv = child.as_account(layout.account, [str(child.jupyter_executable(settings)), "lab",
                                            *settings.server.extra_args])
    env = child.jupyter_environment(settings, layout.account, layout.config_dir)
    try:
        second = child.run(argv, env, timeout=90)
    except subprocess.TimeoutExpired:
        raise AssertionError("the second Jupyter kept running: it moved to another port") from None
    output = second.stdout + second.stderr
    assert second.returncode != 0, output[-2000:]
    assert f"The port {settings.server.port} is already in use" in output, output[-2000:]
    assert "trying another port" not in output


def test_the_extension_is_told_where_to_report_logins(tmp_path):
    from supervisor.render import JupyterInputs, render
    from supervisor.schema import validate

    settings = validate({}, tmp_path / "settings.toml", euid=1000)
    inputs = JupyterInputs(home=tmp_path, hashed_password="", live_file=tmp_path / "live.json",
                           terminal_rc=tmp_path / "bashrc",
                           events_socket=tmp_path / "jupyter" / "events.sock")
    provider = render(settings, inputs)["RemoteIdentityProvider"]
    assert provider["events_socket"] == str(tmp_path / "jupyter" / "events.sock")
