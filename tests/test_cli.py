"""The commands as a user types them: exit codes, messages, files and modes."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys

from jupyter_server.auth.security import passwd_check

from support import cli


def listed_commands(help_text: str) -> list[str]:
    """The names in the Commands section of --help (a rich box, or click's plain list), in order.
    Command names also appear in other commands' descriptions: only the first column counts."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(r"(─ Commands ─|^Commands:)", line))
    names = []
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("╰"):
            break
        entry = re.match(r"^(?:│ |  )(\S+)", line)  # a description's next line starts further in
        if entry:
            names.append(entry[1])
    return names


def test_version_and_help_list_exactly_the_commands():
    assert cli("--version").stdout.strip().startswith("jupyter-remote ")
    result = cli("--help")
    assert result.returncode == 0
    assert sorted(listed_commands(result.stdout)) == \
        ["cert", "check", "password", "reload", "render", "run", "status"]
    result = cli("cert", "--help")
    assert result.returncode == 0
    assert sorted(listed_commands(result.stdout)) == ["ca", "renew", "show"]


def test_python_m_supervisor_is_the_same_command():
    result = subprocess.run([sys.executable, "-m", "supervisor", "--version"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout == cli("--version").stdout


def test_check_summarises_a_valid_file_before_the_first_start(settings, account):
    result = cli("check", "--settings", str(settings))
    assert result.returncode == 0, result.stderr
    assert "URL:         https://127.0.0.1:9999/lab" in result.stdout
    assert "self-signed" in result.stdout and "no certificate yet" in result.stdout
    assert f"user:        {account.name}" in result.stdout
    assert "root_dir:" in result.stdout and "notebooks" in result.stdout
    assert "password:    not set yet" in result.stdout


def test_check_names_a_typo_and_the_right_key(settings):
    settings.write_text(settings.read_text().replace("[server]", "[server]\nprot = 8888"))
    result = cli("check", "--settings", str(settings))
    assert result.returncode == 78
    assert result.stderr == f"{settings}: [server] prot: unknown key (did you mean port?)\n"


def test_every_command_exits_78_on_bad_settings_without_a_traceback(settings):
    settings.write_text("[server]\nport = 70000\n")
    for command in (["check"], ["render"], ["run"], ["password", "--stdin"], ["cert", "show"],
                    ["cert", "renew"], ["cert", "ca"]):
        result = cli(*command, "--settings", str(settings), stdin="x\n", timeout=30)
        assert result.returncode == 78, command
        assert result.stderr == f"{settings}: [server] port: must be 1-65535, got 70000\n", command


def test_settings_come_from_the_environment_variable(settings):
    result = cli("check", env={"JUPYTER_REMOTE_SETTINGS": str(settings)})
    assert result.returncode == 0 and str(settings) in result.stdout


def test_password_stdin_writes_an_argon2_hash_jupyter_accepts_with_mode_0600(settings):
    (settings.parent / "initial-password").write_text("old\n")
    result = cli("password", "--stdin", "--settings", str(settings), stdin="s3cret pass\n")
    assert result.returncode == 0, result.stderr
    hash_file = settings.parent / "password"
    hashed = hash_file.read_text().strip()
    assert hashed.startswith("argon2:$argon2id$")
    assert passwd_check(hashed, "s3cret pass") and not passwd_check(hashed, "s3cret pass\n")
    assert stat.S_IMODE(hash_file.stat().st_mode) == 0o600
    assert not (settings.parent / "initial-password").exists()
    assert "s3cret" not in result.stdout + result.stderr


def test_password_print_prints_the_hash_and_writes_nothing(settings):
    result = cli("password", "--stdin", "--print", "--settings", str(settings), stdin="abc\n")
    assert result.returncode == 0
    assert passwd_check(result.stdout.strip(), "abc")
    assert not (settings.parent / "password").exists()


def test_password_refuses_an_empty_one_and_an_inline_hash(settings):
    result = cli("password", "--stdin", "--settings", str(settings), stdin="\n")
    assert result.returncode == 1
    assert result.stderr == "password: an empty password is not allowed\n"
    hashed = cli("password", "--stdin", "--print", "--settings", str(settings), stdin="abc\n").stdout.strip()
    settings.write_text(settings.read_text() + f"[auth]\npassword_hash = '{hashed}'\n")
    result = cli("password", "--stdin", "--settings", str(settings), stdin="new\n")
    assert result.returncode == 1
    assert "[auth] password_hash is set there and wins over password_file" in result.stderr
    assert not (settings.parent / "password").exists()


def test_check_warns_when_an_inline_hash_is_world_readable(settings):
    hashed = cli("password", "--stdin", "--print", "--settings", str(settings), stdin="abc\n").stdout.strip()
    settings.write_text(settings.read_text() + f"[auth]\npassword_hash = '{hashed}'\n")
    settings.chmod(0o644)
    result = cli("check", "--settings", str(settings))
    assert result.returncode == 0
    assert f"warning: {settings} holds the password hash and is readable by everyone" in result.stderr
    settings.chmod(0o600)
    assert "warning" not in cli("check", "--settings", str(settings)).stderr


def test_check_rejects_a_password_file_that_holds_no_hash(settings):
    (settings.parent / "password").write_text("plain text password\n")
    result = cli("check", "--settings", str(settings))
    assert result.returncode == 78
    assert "not a password hash ([auth] password_file)" in result.stderr


def test_render_prints_the_config_run_uses(settings):
    cli("password", "--stdin", "--settings", str(settings), stdin="abc\n")
    result = cli("render", "--settings", str(settings))
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    server = config["ServerApp"]
    assert (server["ip"], server["port"], server["port_retries"], server["open_browser"]) == \
        ("127.0.0.1", 9999, 0, False)
    assert server["quit_button"] is False and server["allow_root"] is False
    assert server["terminado_settings"] == {"shell_command": [
        "/bin/bash", "--rcfile", str(settings.parent / "run/jupyter/terminal.bashrc"), "-i"]}
    assert server["certfile"].endswith("/tls/live/fullchain.pem")
    assert config["IdentityProvider"] == {"token": ""}
    provider = config["PasswordIdentityProvider"]
    assert provider["password_required"] is True and provider["allow_password_change"] is False
    assert passwd_check(provider["hashed_password"], "abc")
    assert "MappingKernelManager" not in config


def test_render_dual_stack_and_culling(settings):
    settings.write_text(settings.read_text().replace('ip = "127.0.0.1"', 'ip = "::"')
                        + "[kernel]\ncull_idle_minutes = 30\n")
    config = json.loads(cli("render", "--settings", str(settings)).stdout)
    assert config["ServerApp"]["ip"] == ""  # tornado binds "::" IPv6-only; "" binds both families
    assert config["MappingKernelManager"]["cull_idle_timeout"] == 1800


def test_status_and_reload_say_not_running_with_exit_3(settings):
    for command in (["status"], ["reload"]):
        result = cli(*command, "--settings", str(settings))
        assert result.returncode == 3, command
        assert "not running" in result.stderr
    assert json.loads(cli("status", "--json", "--settings", str(settings)).stdout)["state"] == "stopped"


def test_run_help_is_the_cli_and_bad_run_options_are_usage_errors():
    result = cli("run", "--help")
    assert result.returncode == 0 and "ExecStart" in result.stdout
    result = cli("run", "--no-such-option")
    assert result.returncode == 2 and "No such option" in result.stderr
