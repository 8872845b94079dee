"""TLS for Jupyter: the names a certificate must cover, issuing, the versioned store, the renewal
rule, and (watch.py) the daemon's side, which imports no cryptography: certificate work runs in
short-lived children and reports a CertificateInfo."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class CertificateInfo:
    """The live certificate after a check: what the daemon keeps, plain data across processes."""

    version: str
    not_after: str  # ISO 8601
    sha256: str
    issued: bool = False  # this check made it live
    reason: str = ""  # why it was issued
    notices: tuple[str, ...] = field(default=())  # for the log: a CA to trust again, a near expiry
    # acme mode: why the CA's certificate is not (yet) live; when to check again (seconds; None:
    # the usual hourly look); whether only a settings change can help (never retry before).
    error: str = ""
    next_attempt_after: float | None = None
    retry_blocked: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CertificateInfo:
        return cls(**{**data, "notices": tuple(data.get("notices", ()))})

    def days_left(self, now: datetime) -> int | None:
        if not self.not_after:
            return None
        return (datetime.fromisoformat(self.not_after) - now).days


def sha256_fingerprint(der: bytes) -> str:
    """The SHA-256 of a certificate's DER form, lowercase hex: how the daemon names certificates."""
    return hashlib.sha256(der).hexdigest()
