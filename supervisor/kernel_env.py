"""The notebooks' own Python: a writable environment for the Jupyter account, layered over the
bundled one.

The bundled environment is read-only (it belongs to the package), so `%pip install` there fails.
This environment lives in the account's home, survives package upgrades, needs no network to make,
and sees the bundled packages through a .pth file placed after its own site-packages: what the user
installs comes first. A pip constraint pins ipykernel's own dependencies at the bundled versions, so
a user package can never shadow one of them and break every kernel.

The daemon's side (`ensure_kernel`, `PackageJob`) makes the kernelspec and starts this module as
`python -m supervisor.kernel_env` under the account (never as root): the daemon must not create or
write files inside a home the account controls.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from supervisor import child
from supervisor.errors import SettingsError
from supervisor.files import write_atomic
from supervisor.layout import Layout, root_folder

log = logging.getLogger(__name__)

ENV_IN_HOME = Path(".local/share/jupyter-remote/python")
BUNDLED_PTH = "_jupyter_remote_bundled.pth"
CONSTRAINTS = "kernel-constraints.txt"
INSTALLED = "jupyter-remote-packages.json"
# Passed to pip in kernel-package installs: an operator's mirror or proxy (systemctl edit).
PIP_VARIABLES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX",
                 "PIP_TRUSTED_HOST", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "no_proxy")


def location(home: Path) -> Path:
    return home / ENV_IN_HOME


def kernel_spec(python: Path) -> dict[str, object]:
    return {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": True},
    }


# --- the daemon's side ----------------------------------------------------------------------------


def ensure_kernel(layout: Layout) -> Path | None:
    """The default "Python 3" kernel: `kernel.python`, or the notebooks' environment (returned)."""
    settings, account = layout.settings, layout.account
    environment: Path | None
    if settings.kernel.python:
        python, environment = Path(settings.kernel.python), None
        _require_ipykernel(layout, python)
    else:
        environment = location(account.home)
        python = environment / "bin" / "python"
        if not python.exists():
            # Made as the account, in its home; only its first making waits: kernels need it.
            made = child.run(command(layout, environment), child.account_environment(account),
                             timeout=600)
            if made.returncode:
                log.error("cannot make the notebooks' Python environment %s: %s; kernels use the "
                          "bundled Python, where %%pip install cannot write", environment,
                          made.stderr.strip().splitlines()[-1:] or made.returncode)
                layout.kernel_spec.unlink(missing_ok=True)
                return None
    for folder in reversed(layout.kernel_spec.parents[:3]):
        root_folder(folder, 0o755, None)
    spec = json.dumps(kernel_spec(python), indent=1).encode()
    write_atomic(layout.kernel_spec, spec, mode=0o644)
    return environment


def kernel_python(layout: Layout, environment: Path | None) -> Path:
    """The interpreter of the default "Python 3" kernel (`ensure_kernel` chose it)."""
    if layout.settings.kernel.python:
        return Path(layout.settings.kernel.python)
    return environment / "bin" / "python" if environment else Path(sys.executable)


def command(layout: Layout, environment: Path, packages: tuple[str, ...] = ()) -> list[str]:
    """This module, run as the account on `environment`."""
    argv = [sys.executable, "-m", "supervisor.kernel_env", str(environment)]
    if layout.settings.dask.enabled:
        argv.append("--dask")
    if packages:
        argv += ["--packages", *packages]
    return child.as_account(layout.account, argv)


def _require_ipykernel(layout: Layout, python: Path) -> None:
    try:
        probe = child.run(child.as_account(layout.account, [str(python), "-c", "import ipykernel"]),
                          child.account_environment(layout.account), timeout=120)
        ok = probe.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        raise SettingsError(
            f"{layout.settings.source}: [kernel] python: {python} cannot run ipykernel; "
            f"install it with: {python} -m pip install ipykernel"
        )


class PackageJob:
    """Refreshing the notebooks' environment and installing `kernel.packages`, as the account, in a
    child: the loop and the watchdog go on meanwhile; pip's lines reach the log behind `[pip]`.
    One at a time; one asked for meanwhile runs after it, with the settings of then."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._again: tuple[Layout, Path] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, layout: Layout, environment: Path | None) -> None:
        if environment is None:
            return
        if self.process is not None:
            self._again = (layout, environment)
            return
        env = child.account_environment(layout.account)
        env.update({k: os.environ[k] for k in PIP_VARIABLES if k in os.environ})
        try:
            packages = layout.settings.kernel.packages
            self.process = child.start(command(layout, environment, packages), env, "pip")
        except OSError as error:
            log.error("cannot set up the notebooks' Python: %s", error)

    def finished(self, wait_status: int) -> str:
        """Note the job's end; returns what went wrong, or "". Starts the one that waited."""
        self.process = None
        problem = f"kernel packages not installed ({child.describe_exit(wait_status)})" \
            if wait_status else ""
        if self._again:
            layout, environment = self._again
            self._again = None
            self.start(layout, environment)
        return problem


# --- run as the account -------------------------------------------------------------------------


def make(root: Path, dask: bool = False) -> None:
    """Create the environment if missing and bring its links to the bundled one up to date.
    `dask`: distributed stays at the bundled version, the one the local cluster, the dashboard
    proxy and JupyterLab's Dask panes were made with; pip refuses an upgrade, naming the pin."""
    python = root / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
        log.info("made the notebooks' Python environment %s", root)
    prefix = {"base": str(root), "platbase": str(root)}
    site_packages = Path(sysconfig.get_path("purelib", vars=prefix))
    bundled = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    _write(site_packages / BUNDLED_PTH, "".join(f"{p}\n" for p in sorted(bundled)))
    pins = _pins("ipykernel") + (_exact("dask", "distributed") if dask else [])
    _write(root / CONSTRAINTS, "".join(f"{r}\n" for r in sorted(set(pins))))
    # pip reads <prefix>/pip.conf after the global and user files: the constraint always applies.
    _write(root / "pip.conf", f"[global]\nconstraint = {root / CONSTRAINTS}\n")
    for name in ("pip", "pip3"):  # --without-pip leaves none; the bundled pip installs here
        script = root / "bin" / name
        _write(script, f'#!/bin/sh\nexec "{python}" -m pip "$@"\n')
        script.chmod(0o755)


def install_packages(root: Path, packages: list[str]) -> int:
    """pip install what is not installed yet; the record makes a restart install nothing."""
    record = root / INSTALLED
    try:
        done = set(json.loads(record.read_text()))
    except (OSError, ValueError):
        done = set()
    wanted = [p for p in packages if p not in done]
    if not wanted:
        return 0
    log.info("installing kernel packages: %s", " ".join(wanted))
    result = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install",
                             "--disable-pip-version-check", "--no-input", *wanted])
    if result.returncode == 0:
        _write(record, json.dumps(sorted(done | set(wanted))))
    return result.returncode


def _pins(top: str) -> list[str]:
    """name==version for `top` and everything it needs, as installed here."""
    from importlib import metadata  # here: the resident daemon imports this module too

    seen: dict[str, str] = {}
    pending = [top]
    while pending:
        name = _normal(pending.pop())
        if name in seen:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = distribution.version
        for requirement in distribution.requires or []:
            if "extra ==" in requirement:
                continue
            pending.append(re.split(r"[ ;<>=!~\[(]", requirement.strip(), maxsplit=1)[0])
    return [f"{name}=={version}" for name, version in sorted(seen.items())]


def _exact(*names: str) -> list[str]:
    """name==version of these packages alone, as installed here."""
    from importlib import metadata

    return [f"{_normal(name)}=={metadata.version(name)}" for name in names]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _write(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_text(text)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m supervisor.kernel_env")
    parser.add_argument("root", type=Path)
    parser.add_argument("--packages", nargs="*", default=[])
    parser.add_argument("--dask", action="store_true", help="pin dask and distributed")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if os.geteuid() == 0:
        log.error("refusing to run as root: this writes into the Jupyter account's home")
        return 2
    make(arguments.root, arguments.dask)
    code = install_packages(arguments.root, arguments.packages)
    if code:
        log.error("kernel packages not installed (pip exit %s): see pip's lines above; "
                  "the server keeps serving", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
