"""The `jupyter-remote` command's entry point: `run` goes straight to the daemon, the rest to the
CLI.

The daemon is what systemd keeps running for months, and its start is on every boot's path: it
skips the command-line library (typer) and its imports, which would stay resident otherwise.
Anything but a plain `run [--settings PATH]` (`run --help`, say) goes to the CLI as usual.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    settings = _plain_run(sys.argv[1:])
    if settings is None:
        from supervisor import cli

        cli.main()
        return
    # Validation (pydantic, about 50 ms) runs in a child from here, while the daemon imports.
    from supervisor import loading

    validating = loading.start_isolated(settings)
    from supervisor import daemon

    sys.exit(daemon.main([str(settings)], validating))


def _plain_run(arguments: list[str]) -> Path | None:
    """The settings path of `run`, `run --settings PATH` or `run --settings=PATH`; else None."""
    from supervisor.settings import settings_path_from_env

    match arguments:
        case ["run"]:
            return settings_path_from_env()
        case ["run", "--settings", path] if not path.startswith("-"):
            return Path(path)
        case ["run", option] if option.startswith("--settings="):
            return Path(option.removeprefix("--settings="))
    return None
