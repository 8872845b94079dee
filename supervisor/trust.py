"""Whether root may act on a path: as sshd's StrictModes, the file and every folder above it must be
root's and writable by root alone, or another user could replace what root reads or writes there
(a symlink to a root-only key, say, that root would then copy where the account reads it).

One exception keeps /tmp usable: in a sticky folder (mode +t) only an entry's owner may rename or
remove it, so a root-owned entry there stays root's. A path not made yet is judged by the folder it
would be made in, where another user must not be able to make it first.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path


def untrusted(path: Path) -> str | None:
    """Why root must not use `path`, or None when no other user could replace it."""
    for candidate in {Path(os.path.abspath(path)), Path(os.path.realpath(path))}:
        reason = _chain(candidate)
        if reason:
            return reason
    return None


def _chain(path: Path) -> str | None:
    existing, missing = path, False
    while not os.path.lexists(existing):
        existing, missing = existing.parent, True
    if missing:
        info = os.lstat(existing)
        if info.st_mode & 0o022:
            return f"{existing} is writable by others, who could make {path} first"
    for folder in (existing, *existing.parents):
        info = os.lstat(folder)
        if info.st_uid != 0:
            return f"{folder} belongs to {_name(info.st_uid)}, not root"
        if stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o022:
            continue  # a symlink's own mode means nothing; its owner was checked
        # Every entry below a folder is root's by now: sticky, others cannot replace them.
        sticky_above = folder != existing and info.st_mode & stat.S_ISVTX
        if not sticky_above:
            return f"{folder} is writable by others than root"
    return None


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
