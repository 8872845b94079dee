"""The daemon's side of certificates: when to check, and what is live now. No cryptography here.

A check runs `lifecycle.ensure_current` in a short-lived child (supervisor.isolated): it issues or
imports only when due, and a failure leaves the live certificate as it was. Checks happen hourly
(renewal is due by days), every FILES_CHECK seconds in files mode when certbot's files changed, and
when asked (`cert renew` in another process is noticed through the store).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, UTC

from supervisor import isolated
from supervisor.accounts import Account
from supervisor.errors import JupyterRemoteError
from supervisor.loop import Timers
from supervisor.settings import Settings
from supervisor.tls import CertificateInfo
from supervisor.tls.store import CertificateStore

log = logging.getLogger(__name__)

CERTIFICATE_CHECK = 3600.0  # renewal is due by days; an hourly look is plenty
FILES_CHECK = 5.0  # certbot's files are looked at this often in files mode
ACME_SOONEST = 5.0  # acme mode: never ask the CA again sooner, whatever the last answer said
FileStamp = tuple[tuple[int, int, int] | None, ...]


def ensure_certificate(settings: Settings, account: Account) -> CertificateInfo:
    """Present and current TLS material, made in a short-lived child; waits for it."""
    # Nobody answers an ACME challenge before Jupyter serves: this only makes sure one is live.
    info = CertificateInfo.from_dict(isolated.call(_ensure_here, settings, account, False,
                                                   what="a certificate worker"))
    for notice in info.notices:
        log.warning("%s", notice)
    return info


def _ensure_here(settings: Settings, account: Account, jupyter_answers: bool) -> CertificateInfo:
    # Imported here, in the child: the resident daemon never loads cryptography.
    from supervisor.tls import lifecycle

    return lifecycle.ensure_current(settings, account, jupyter_answers=jupyter_answers)


def live_certificate(store: CertificateStore) -> CertificateInfo | None:
    """What the store says is live, without parsing a certificate; None when nothing is."""
    version = store.live_version()
    meta = store.meta(version) if version else None
    if version is None or not meta or not meta.get("sha256"):
        return None
    return CertificateInfo(version.name, meta.get("not_after", ""), meta["sha256"])


def files_stamp(*paths: str) -> FileStamp:
    stamps: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            info = os.stat(path)
            stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


class CertificateWatcher:
    """What is live, since when, and the timers that keep it current."""

    def __init__(self, timers: Timers, on_change: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timers, self.on_change, self.clock = timers, on_change, clock
        self.settings: Settings | None = None
        self.account: Account | None = None
        self.live: CertificateInfo | None = None
        self.changed_at = 0.0  # clock() when the live certificate last changed
        self.check: isolated.Pending | None = None  # a check running in a child
        self.problem = ""  # acme mode: why the CA's certificate is not (yet) live
        self._files_stamp: FileStamp | None = None
        self._checked_stamp: FileStamp | None = None

    def watch(self, settings: Settings, account: Account, live: CertificateInfo | None) -> None:
        """Keep the certificate of `settings` current, starting from `live` (None: TLS is off)."""
        self.settings, self.account = settings, account
        self.timers.cancel("certificate", "certificate files")
        self._note(live)
        if live is None:
            return
        self.timers.after("certificate", CERTIFICATE_CHECK, self.start_check)
        if settings.tls.mode == "files":
            # `live` was checked against the files as they are now.
            self._files_stamp = files_stamp(settings.tls.cert_file, settings.tls.key_file)
            self._checked_stamp = self._files_stamp
            self.timers.after("certificate files", FILES_CHECK, self._look_at_files)

    def since_change(self) -> float:
        return self.clock() - self.changed_at

    def days_left(self) -> int | None:
        return self.live.days_left(datetime.now(UTC)) if self.live else None

    def start_check(self) -> None:
        """Check in a child, without waiting; the loop calls `read` when `check.fd` is readable."""
        self.timers.after("certificate", CERTIFICATE_CHECK, self.start_check)
        if self.check is not None or self.settings is None or self.live is None:
            return
        self.check = isolated.start("a certificate worker", _ensure_here, self.settings,
                                    self.account, True)

    def read(self) -> None:
        assert self.check is not None
        if not self.check.read():
            return
        check, self.check = self.check, None
        try:
            info = CertificateInfo.from_dict(check.result())
        except JupyterRemoteError as error:
            # certbot may have replaced one file of the pair and not yet the other: the next look
            # tries again.
            log.warning("certificate unchanged: %s", "; ".join(error.lines))
            return
        self._checked_stamp = self._files_stamp
        for notice in info.notices:
            log.warning("%s", notice)
        if info.error != self.problem:
            if info.error:
                log.warning("certificate: %s; still serving the last good certificate", info.error)
            else:
                log.info("certificate: the ACME CA's certificate is live")
            self.problem = info.error
        if info.next_attempt_after is not None:  # acme mode: when the CA may be asked again
            wait = min(CERTIFICATE_CHECK, max(info.next_attempt_after, ACME_SOONEST))
            self.timers.after("certificate", wait, self.start_check)
        self._note(info)

    def notice_renewal_elsewhere(self, store: CertificateStore) -> None:
        """A certificate made by `jupyter-remote cert renew` in another process."""
        if self.live is None:
            return
        info = live_certificate(store)
        if info and info.sha256 != self.live.sha256:
            self._note(info)

    def _look_at_files(self) -> None:
        assert self.settings is not None
        self.timers.after("certificate files", FILES_CHECK, self._look_at_files)
        self._files_stamp = files_stamp(self.settings.tls.cert_file, self.settings.tls.key_file)
        if self._files_stamp != self._checked_stamp:
            self.start_check()

    def _note(self, info: CertificateInfo | None) -> None:
        changed = (info.sha256 if info else None) != (self.live.sha256 if self.live else None)
        self.live = info
        if changed:
            self.changed_at = self.clock()
        self.on_change()
