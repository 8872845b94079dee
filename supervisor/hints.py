"""jupyter-remote commands as printed for a user to paste: they must work exactly as printed.

From a checkout (scripts/run) `jupyter-remote` is not on PATH and the settings are not the default
file, so a bare `jupyter-remote cert ca` would fail or, worse, act on /etc/jupyter-remote. A hint
therefore names the program by its full path unless PATH finds this same installation, and adds
`--settings PATH` unless the settings are the default file. The installed service (the default
file, run by root) reads `sudo jupyter-remote ...`, since its CA and password files are root's.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from supervisor.settings import DEFAULT_SETTINGS_PATH

PROGRAM = "jupyter-remote"


@dataclass(frozen=True)
class Invocation:
    """How a user reaches this jupyter-remote and these settings from a shell."""

    program: str  # "jupyter-remote", or the full path when PATH does not lead here
    settings: Path  # absolute
    sudo: bool

    def command(self, *args: str) -> str:
        words = [*(["sudo"] if self.sudo else []), self.program, *args]
        if self.settings != DEFAULT_SETTINGS_PATH:
            words += ["--settings", str(self.settings)]
        return shlex.join(words)


def invocation(settings_path: Path) -> Invocation:
    ours = Path(sys.executable).parent / PROGRAM  # the installation running now
    found = shutil.which(PROGRAM)
    on_path = found is not None and os.path.realpath(found) == os.path.realpath(ours)
    absolute = Path(os.path.abspath(settings_path))
    return Invocation(PROGRAM if on_path else str(ours), absolute,
                      sudo=os.geteuid() == 0 and absolute == DEFAULT_SETTINGS_PATH)


def command(settings_path: Path, *args: str) -> str:
    """`jupyter-remote ARGS` for the settings at `settings_path`, ready to paste."""
    return invocation(settings_path).command(*args)
