"""The notebooks' own Python: a writable environment for the Jupyter account, layered over the bundled one.

The bundled environment is read-only (it belongs to the package), so `%pip install` there fails.
This environment lives in the account's home, survives package upgrades, needs no network to make,
and sees the bundled packages through a .pth file placed after its own site-packages: what the user
installs comes first. A pip constraint pins ipykernel's own dependencies at the bundled versions, so
a user package can never shadow one of them and break every kernel.

This module also runs as `python -m supervisor.kernel_env` under the account (never as root): the
daemon must not create or write files inside a home the account controls.
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

log = logging.getLogger(__name__)

ENV_IN_HOME = Path(".local/share/jupyter-remote/python")
BUNDLED_PTH = "_jupyter_remote_bundled.pth"
CONSTRAINTS = "kernel-constraints.txt"
INSTALLED = "jupyter-remote-packages.json"


def location(home: Path) -> Path:
    return home / ENV_IN_HOME


def kernel_spec(python: Path) -> dict[str, object]:
    return {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": True},
    }


# --- run as the account -------------------------------------------------------------------------


def make(root: Path) -> None:
    """Create the environment if missing and bring its links to the bundled one up to date."""
    python = root / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
        log.info("made the notebooks' Python environment %s", root)
    site_packages = Path(sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)}))
    bundled = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    _write(site_packages / BUNDLED_PTH, "".join(f"{p}\n" for p in sorted(bundled)))
    _write(root / CONSTRAINTS, "".join(f"{r}\n" for r in _pins("ipykernel")))
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
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if os.geteuid() == 0:
        log.error("refusing to run as root: this writes into the Jupyter account's home")
        return 2
    make(arguments.root)
    code = install_packages(arguments.root, arguments.packages)
    if code:
        log.error("kernel packages not installed (pip exit %s): see pip's lines above; "
                  "the server keeps serving", code)
    return code


if __name__ == "__main__":
    sys.exit(main())
