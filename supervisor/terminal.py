"""The shell of JupyterLab terminals: a login shell's files, then the notebooks' Python first.

Terminals used to start `/bin/bash -l`, and Debian's /etc/profile sets PATH afresh, so the
notebooks' environment that Jupyter's own PATH puts first was gone in the shell: `pip install x`
there never reached the kernels. An environment variable would not survive /etc/profile either,
and a file in /etc/profile.d would need the package (scripts/run has none). So terminals run
`bash --rcfile <this file>`: it reads what a login reads (/etc/profile, then the first of
~/.bash_profile, ~/.bash_login, ~/.profile; Debian's read bash.bashrc and ~/.bashrc from there)
and only then puts the notebooks' `bin` and Jupyter's in front. The file is root's, in the
runtime config folder, rewritten at every start from the paths of then.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from supervisor import child
from supervisor.files import write_atomic
from supervisor.layout import Layout

def bin_folders(layout: Layout, environment: Path | None) -> list[Path]:
    """Where `python`, `pip` and `jupyter` come from in a terminal, first first: the notebooks'
    Python (its environment, or `kernel.python`'s folder), then the Jupyter that serves."""
    folders = []
    if environment is not None:
        folders.append(environment / "bin")
    elif layout.settings.kernel.python:
        folders.append(Path(layout.settings.kernel.python).parent)
    folders.append(child.jupyter_executable(layout.settings).parent)
    return list(dict.fromkeys(folders))


def rc_text(folders: list[Path]) -> str:
    front = ":".join(shlex.quote(str(folder)) for folder in folders)
    return (
        "# The shell of jupyter-remote's JupyterLab terminals, rewritten at every start:\n"
        "# put your own lines in ~/.bashrc or ~/.profile, which are read from here.\n"
        "if [ -r /etc/profile ]; then . /etc/profile; fi\n"
        "for login_file in ~/.bash_profile ~/.bash_login ~/.profile; do\n"
        '    if [ -r "$login_file" ]; then . "$login_file"; break; fi\n'
        "done\n"
        "unset login_file\n"
        "# The notebooks' python, pip and jupyter come first, as in notebooks (%pip).\n"
        f'PATH={front}:"$PATH"\n'
        "export PATH\n"
    )


def write_rc(layout: Layout, environment: Path | None) -> None:
    write_atomic(layout.terminal_rc, rc_text(bin_folders(layout, environment)).encode(),
                 mode=0o644)
