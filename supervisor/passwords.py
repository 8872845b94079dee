"""Password hashes in the form Jupyter accepts, the first-start password, and the hash file."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from supervisor import hints, isolated
from supervisor.errors import JupyterRemoteError, SettingsError
from supervisor.files import write_atomic
from supervisor.settings import Settings, looks_like_password_hash

log = logging.getLogger(__name__)

# jupyter_server.auth.passwd's own argon2 parameters, so our hashes are the ones Jupyter makes.
# argon2-cffi is used directly: importing jupyter_server to reach it costs the daemon 80 ms.
_MEMORY_COST, _TIME_COST, _PARALLELISM = 10240, 10, 8


def hash_password(password: str) -> str:
    """`argon2:$argon2id$...`, the value of PasswordIdentityProvider.hashed_password."""
    if not password:
        raise JupyterRemoteError("password: an empty password is not allowed")
    import argon2

    return "argon2:" + argon2.PasswordHasher(
        memory_cost=_MEMORY_COST, time_cost=_TIME_COST, parallelism=_PARALLELISM).hash(password)


def make_initial_password() -> str:
    """A strong random password (144 bits) that reads and types well: letters, digits, - and _."""
    return secrets.token_urlsafe(18)


def write_hash(path: Path, hashed: str) -> None:
    write_atomic(path, (hashed + "\n").encode(), mode=0o600)


def read_hash(settings: Settings) -> str | None:
    """The configured hash: inline `auth.password_hash` wins over the file; None when none is."""
    if settings.auth.password_hash:
        return settings.auth.password_hash
    path = settings.password_path
    try:
        hashed = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise SettingsError(f"{path}: cannot read the password hash: {error.strerror}") from None
    if not looks_like_password_hash(hashed):
        raise SettingsError(
            f"{path}: not a password hash ([auth] password_file); "
            f"write one with: {hints.command(settings.source, 'password')}"
        )
    return hashed


def ensure_password(settings: Settings) -> str:
    """The hash to serve with; on a first start with none set, make a password and say where it is
    (never what it is)."""
    hashed = read_hash(settings)
    if hashed:
        return hashed
    password = make_initial_password()
    # argon2 takes 10 MB to hash: in a child, so that the daemon does not keep them.
    hashed = isolated.call(hash_password, password)
    write_atomic(settings.initial_password_path, (password + "\n").encode(), mode=0o600)
    write_hash(settings.password_path, hashed)
    log.warning(
        "first start: a password was made; read it in %s (change it with: %s)",
        settings.initial_password_path, hints.command(settings.source, "password"),
    )
    return hashed
