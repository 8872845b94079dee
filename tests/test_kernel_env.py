"""The notebooks' own Python: `%pip install` works, ipykernel cannot be broken, packages from settings."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import psutil

from support import cli, wait_until


def build_wheel(folder: Path, name: str, version: str, code: str) -> Path:
    """A real wheel, made by hand so no build tool or network is needed."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": code,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    wheel.chmod(0o644)
    return wheel


def run_in_new_kernel(serving, code: str) -> str:
    client = serving.logged_in_client()
    kernel = client.kernel(client.start_kernel())
    try:
        return kernel.execute(code, timeout=120)
    finally:
        kernel.close()


def test_pip_install_in_a_notebook_then_import_in_a_new_kernel(serving, account, folder):
    wheels = folder / "wheels"
    wheels.mkdir(mode=0o755)
    # A name of this run's own: run as a user, the account (and its environment) outlives the test.
    package = f"jrtiny{folder.name.rsplit('-', 1)[-1].replace('_', '')}"
    build_wheel(wheels, package, "1.0", "ANSWER = 42\n")
    output = run_in_new_kernel(serving, f"%pip install --no-index --find-links {wheels} {package}\n")
    assert f"Successfully installed {package}-1.0" in output, output
    assert run_in_new_kernel(serving, f"import {package}, sys; print({package}.ANSWER, sys.prefix)") \
        .split()[0] == "42"
    environment = account.home / ".local/share/jupyter-remote/python"
    installed = next(environment.glob(f"lib/python3*/site-packages/{package}/__init__.py"))
    assert installed.stat().st_uid == account.uid
    assert environment.stat().st_uid == account.uid
    # Terminals find the notebooks' pip and python first.
    jupyter = psutil.Process(serving.daemon.status()["jupyter_pid"])
    path = jupyter.environ()["PATH"].split(":")
    assert path[0] == str(environment / "bin")
    assert (environment / "bin" / "pip").exists()


def test_a_package_claiming_an_ipykernel_dependency_cannot_break_kernels(serving, folder):
    wheels = folder / "wheels"
    wheels.mkdir(mode=0o755)
    build_wheel(wheels, "traitlets", "99.0", "raise ImportError('broken on purpose')\n")
    output = run_in_new_kernel(serving, f"%pip install --no-index --find-links {wheels} traitlets==99.0\n")
    assert "(constraint) traitlets==" in output and "Successfully installed" not in output, output
    assert run_in_new_kernel(serving, "print('still fine')").strip() == "still fine"


def test_kernel_packages_install_once_and_a_missing_one_is_a_clear_error(make_settings, start_daemon, folder):
    wheels = folder / "wheels"
    wheels.mkdir(mode=0o755)
    name = f"jrpkg{folder.name[-6:].lower().replace('_', '')}"
    build_wheel(wheels, name, "2.0", "VERSION = '2.0'\n")
    settings = make_settings(kernel={"packages": [name]})
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    daemon = start_daemon(settings, **env)
    daemon.wait_ready()
    wait_until(lambda: f"Successfully installed {name}-2.0" in daemon.log(), 120, "the package install")
    wait_until(lambda: not _kernel_job_running(daemon), 60, "the install to end (it records what it did)")
    assert daemon.stop() == 0

    again = start_daemon(settings, **env)
    again.wait_ready()
    wait_until(lambda: not _kernel_job_running(again), 60, "the environment refresh to end")
    assert f"installing kernel packages: {name}" not in again.log()

    settings.write_text(settings.read_text().replace(f'packages = ["{name}"]',
                                                     f'packages = ["{name}", "jr-no-such-package"]'))
    result = cli("reload", "--settings", str(settings))
    assert result.returncode == 0, result.stderr
    wait_until(lambda: "kernel packages not installed" in again.log(), 120, "the pip failure")
    assert "jr-no-such-package" in again.log()
    assert again.status()["state"] == "running"
    assert "kernel packages not installed" in again.status()["last_error"]


def _kernel_job_running(daemon) -> bool:
    for process in daemon.tree():
        try:
            if "supervisor.kernel_env" in " ".join(process.cmdline()):
                return True
        except psutil.Error:  # gone, or a zombie the daemon has yet to reap: not running
            continue
    return False


def test_kernel_python_names_the_interpreter_kernels_run(serve, folder):
    other = folder / "other-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(other)], check=True)
    bundled = next(p for p in sys.path if p.endswith("site-packages"))
    site = next(other.glob("lib/python3*/site-packages"))
    (site / "bundled.pth").write_text(bundled + "\n")  # this interpreter has ipykernel
    serving = serve(kernel={"python": str(other / "bin" / "python")})
    assert run_in_new_kernel(serving, "import sys; print(sys.executable)").strip() == str(other / "bin" / "python")


def test_kernel_python_without_ipykernel_names_the_fix(make_settings, folder):
    bare = folder / "bare-python"
    # From the test environment's interpreter, a venv of its base Python: no ipykernel there.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    settings = make_settings(kernel={"python": str(bare / "bin" / "python")})
    result = cli("run", "--settings", str(settings), timeout=60)
    assert result.returncode == 78
    assert (f"[kernel] python: {bare}/bin/python cannot run ipykernel; "
            f"install it with: {bare}/bin/python -m pip install ipykernel") in result.stderr
