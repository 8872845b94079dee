"""The account Jupyter and its kernels run as: `server.user` under root, else whoever runs us."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from supervisor.settings import Settings


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: Path

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()


def serving_account(settings: Settings) -> Account:
    """Run by root, the daemon serves as `server.user` (never root); run by anyone else, as them."""
    entry = pwd.getpwnam(settings.server.user) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
