"""Every way a command ends badly is one line (or none) and an exit code, never a traceback."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading

import pytest

from support import JUPYTER_REMOTE, wait_until
from supervisor.errors import (
    JupyterRemoteError, NotRunning, ReloadRejected, SettingsError, describe,
)


def test_ctrl_c_at_the_password_prompt_exits_130_quietly(settings):
    # A session of its own: no terminal, so the prompt reads standard input, which stays open.
    process = subprocess.Popen([JUPYTER_REMOTE, "password", "--settings", str(settings)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    errors: list[bytes] = []  # read as it comes: the prompt ends no line

    def read() -> None:
        while chunk := os.read(process.stderr.fileno(), 4096):
            errors.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_until(lambda: b"New password:" in b"".join(errors), 60, "the prompt")
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        reader.join(10)
    assert b"Traceback" not in b"".join(errors)
    assert not (settings.parent / "password").exists()


def test_a_full_disk_is_one_line_and_the_old_password_stays(settings):
    hash_file = settings.parent / "password"
    subprocess.run([JUPYTER_REMOTE, "password", "--stdin", "--settings", str(settings)],
                   input="first\n", text=True, capture_output=True, timeout=60, check=True)
    before = hash_file.read_text()

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))  # the disk "fills up" after 10 bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    # Not measured by scripts/coverage: its data file could not be written either.
    result = subprocess.run([JUPYTER_REMOTE, "password", "--stdin", "--settings", str(settings)],
                            input="second\n", text=True, capture_output=True, timeout=60,
                            preexec_fn=small_files, env={**os.environ, "COVERAGE_PROCESS_START": ""})
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["jupyter-remote: File too large"]
    assert hash_file.read_text() == before  # written aside and renamed: never half a hash


@pytest.mark.parametrize(("error", "lines", "code"), [
    (SettingsError("s.toml: [server] port: must be 1-65535, got 70000"),
     ["s.toml: [server] port: must be 1-65535, got 70000"], 78),
    (ReloadRejected("rejected", "second line"), ["rejected", "second line"], 78),
    (NotRunning("jupyter-remote is not running"), ["jupyter-remote is not running"], 3),
    (JupyterRemoteError("cannot update the certificate"), ["cannot update the certificate"], 1),
    (KeyboardInterrupt(), [], 130),
    (PermissionError(13, "Permission denied", "/etc/jupyter-remote/password"),
     ["jupyter-remote: Permission denied (/etc/jupyter-remote/password)"], 1),
    (OSError("no such thing"), ["jupyter-remote: no such thing"], 1),
    (ValueError("a bug"), ["jupyter-remote: internal error: ValueError('a bug')"], 1),
])
def test_every_error_maps_to_its_lines_and_exit_code(error, lines, code):
    assert describe(error) == (lines, code)
