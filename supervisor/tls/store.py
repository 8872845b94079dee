"""Versioned certificate storage with one atomic switch of what is live (as certbot's storage does).

    <state_dir>/tls/ca/ca.pem, ca-key.pem      the local CA (folder and key: root alone)
    <state_dir>/tls/versions/0007/             one issued or imported certificate, whole or absent
        fullchain.pem  privkey.pem  meta.json  (privkey: root's, readable by the account's group)
    <state_dir>/tls/live -> versions/0007      replaced by rename: never half-switched
    <state_dir>/tls/acme/, acme-challenges/     acme mode (supervisor.tls.acme)

A version folder is filled under a temporary name and renamed into place, so a reader never sees
half of one; the live link is replaced with rename(2), so it always names a whole version.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from supervisor.accounts import Account
from supervisor.files import fsync_directory, write_atomic

log = logging.getLogger(__name__)

CHAIN = "fullchain.pem"
KEY = "privkey.pem"
META = "meta.json"
KEEP_VERSIONS = 3


def challenge_dir(state_dir: Path) -> Path:
    """acme mode: where the daemon publishes challenge answers for the extension inside Jupyter."""
    return state_dir / "tls" / "acme-challenges"


class CertificateStore:
    def __init__(self, state_dir: Path, account: Account) -> None:
        self.root = state_dir / "tls"
        self.versions = self.root / "versions"
        self.live = self.root / "live"
        self.ca_dir = self.root / "ca"
        self.account = account

    @property
    def certfile(self) -> Path:
        return self.live / CHAIN

    @property
    def keyfile(self) -> Path:
        return self.live / KEY

    # A key Jupyter reads is root's and readable by the account's group: Jupyter can read it, and
    # cannot replace what root parses next time.
    @property
    def key_mode(self) -> int:
        return 0o600 if self.account.is_self else 0o640

    @property
    def key_owner(self) -> tuple[int, int] | None:
        return None if self.account.is_self else (0, self.account.gid)

    @property
    def ca_certificate(self) -> Path:
        return self.ca_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / "ca-key.pem"

    def prepare(self) -> None:
        for folder, mode in ((self.root, 0o755), (self.versions, 0o755), (self.ca_dir, 0o700)):
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time: the daemon and `cert renew` may both issue. The lock file is
        root's alone: anyone who could open it could hold the lock and stall every renewal."""
        fd = os.open(self.root / ".lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            os.fchmod(fd, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def live_version(self) -> Path | None:
        try:
            target = self.live.resolve(strict=True)
        except OSError:
            return None
        return target if (target / CHAIN).is_file() and (target / KEY).is_file() else None

    def meta(self, version: Path | None = None) -> dict[str, Any] | None:
        version = version or self.live_version()
        if version is None:
            return None
        try:
            return json.loads((version / META).read_text())
        except (OSError, ValueError):
            return None

    def add_version(self, chain_pem: bytes, key_pem: bytes, meta: dict[str, Any]) -> Path:
        staging = Path(tempfile.mkdtemp(dir=self.versions, prefix=".new-"))
        try:
            os.chmod(staging, 0o755)
            write_atomic(staging / CHAIN, chain_pem, mode=0o644)
            write_atomic(staging / KEY, key_pem, mode=self.key_mode, owner=self.key_owner)
            write_atomic(staging / META, json.dumps(meta, indent=1).encode(), mode=0o644)
            number = max((int(p.name) for p in self._complete_versions()), default=0) + 1
            final = self.versions / f"{number:04d}"
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_directory(self.versions)
        return final

    def switch(self, version: Path) -> None:
        pending = self.root / ".live.new"
        pending.unlink(missing_ok=True)
        os.symlink(f"versions/{version.name}", pending)
        os.replace(pending, self.live)
        fsync_directory(self.root)
        log.info("certificate version %s is live", version.name)

    def repair(self) -> None:
        """Undo what an interrupted issuance or switch left behind."""
        (self.root / ".live.new").unlink(missing_ok=True)
        for staging in self.versions.glob(".new-*"):
            shutil.rmtree(staging, ignore_errors=True)
        if self.live_version() is None:
            complete = [v for v in self._complete_versions()
                        if (v / CHAIN).is_file() and (v / KEY).is_file()]
            if complete:
                log.warning("the live certificate link was broken; pointing it at %s",
                            complete[-1].name)
                self.switch(complete[-1])
            elif self.live.is_symlink():
                self.live.unlink()

    def prune(self) -> None:
        live = self.live_version()
        old = [v for v in self._complete_versions() if v != live][: -KEEP_VERSIONS + 1 or None]
        for version in old:
            shutil.rmtree(version, ignore_errors=True)

    def _complete_versions(self) -> list[Path]:
        numbered = (p for p in self.versions.iterdir() if p.name.isdigit())
        return sorted(numbered, key=lambda p: int(p.name))
