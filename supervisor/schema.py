"""The pydantic schema of settings.toml, and a validator that reports every error of a file at once.

Every error is one line naming the file, section and key, what is wrong and what was given:
``settings.toml: [server] port: must be 1-65535, got 70000``. What was given is left out for secret
keys (the password hash: a password typed there by mistake must never reach a log) and for keys
that are not ours (a misspelt secret key is still a secret).

Validation fills supervisor.settings.Settings, frozen dataclasses: the resident daemon validates
in a short-lived child (supervisor.loading) and never holds pydantic (about 20 MB) in memory.
"""

from __future__ import annotations

import difflib
import grp
import ipaddress
import json
import os
import pwd
import re
import unicodedata
import tomllib
import urllib.parse
from pathlib import Path
from typing import Annotated, Any
from collections.abc import Callable

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from supervisor.errors import SettingsError
from supervisor.settings import Settings, is_loopback, looks_like_password_hash
from supervisor.trust import untrusted

MAX_VALIDITY_DAYS = 825  # Apple's limit for TLS server certificates
TLS_MODES = ("self-signed", "acme", "files", "off")
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
IDLE_ACTIONS = ("poweroff", "stop")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# Values never shown in an error: only what is wrong with them.
SECRET_KEYS = {("auth", "password_hash")}
# Membership in these is root in all but name (sudo, a docker or lxd socket, raw disks, the shadow
# file, every log): notebook code would get it too.
PRIVILEGED_GROUPS = ("root", "sudo", "wheel", "admin", "adm", "docker", "lxd", "disk", "shadow")


# --- value rules: each raises one message, the loader adds ", got <value>" ----------------------


def _fail(message: str) -> None:
    # Braces would be read as format fields by pydantic; our messages never need them.
    raise PydanticCustomError("jupyter_remote", message.replace("{", "(").replace("}", ")"))


def _between(low: int, high: int) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not low <= value <= high:
            _fail(f"must be {low}-{high}")
        return value

    return check


def _one_of(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            _fail("must be one of " + ", ".join(json.dumps(c) for c in choices))
        return value

    return check


def _printable(value: str) -> str:
    # A newline in a value would become a forged log line or a second sd_notify field (STOPPING=1).
    if any(unicodedata.category(character) == "Cc" for character in value):
        _fail("must not hold control characters (newline, carriage return, tab, NUL, DEL, ...)")
    return value


def _absolute_or_empty(value: str) -> str:
    if value and not value.startswith("/"):
        _fail('must be an absolute path or ""')
    return value


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        _fail('must be an IP address such as "0.0.0.0", "::" or "127.0.0.1"')
    return value


def _url_path(value: str) -> str:
    if not value.startswith("/"):
        _fail('must start with "/"')
    return value


def _base_url(value: str) -> str:
    if not (value.startswith("/") and value.endswith("/")):
        _fail('must start and end with "/"')
    return value


def _account_name(value: str) -> str:
    if value == "root":
        _fail("must not be root (Jupyter and its kernels never run as root)")
    if not value:
        _fail("must name an account")
    return value


def _hostname(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        _fail("must be a DNS name or an IP address")
    return value


def _acme_directory(value: str) -> str:
    # The account key signs every request, but the directory itself (and so which server gets
    # them) is trusted only through HTTPS; plain HTTP is for a test CA on this machine alone.
    parsed = urllib.parse.urlsplit(value)
    host = parsed.hostname or ""
    try:
        host_is_loopback = bool(host) and (
            host == "localhost" or ipaddress.ip_address(host).is_loopback)
    except ValueError:
        host_is_loopback = False
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        _fail('must be the https:// URL of an ACME directory, such as "' + LETS_ENCRYPT + '"')
    if parsed.scheme == "http" and not host_is_loopback:
        _fail("must be https:// (http:// only for a server on this machine)")
    return value


def _email_or_empty(value: str) -> str:
    if value and not re.fullmatch(r"[^@\s:,]+@[^@\s:,]+\.[^@\s:,]+", value):
        _fail('must be an e-mail address such as "you@example.com", or ""')
    return value


def _password_hash(value: str) -> str:
    if value and not looks_like_password_hash(value):
        _fail('must be a hash as printed by "jupyter-remote password --print" '
              '(argon2:$argon2id$...)')
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        _fail("must not be empty")
    return value


def _requirement(value: str) -> str:
    # A leading "-" would be read by pip as an option (e.g. --index-url), not a package.
    if not value.strip() or value.lstrip().startswith("-"):
        _fail("must be a package name such as \"pandas\" or \"numpy>=2\"")
    return value


def _dask_cluster(value: str) -> str:
    if value == "local":
        return value
    parsed = urllib.parse.urlsplit(value)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if "@" in value:
        _fail("must hold no user name or password (the cluster's TLS identity is its credential)")
    if (parsed.scheme not in ("tls", "tcp") or not parsed.hostname or not port
            or parsed.path or parsed.query or parsed.fragment):
        _fail('must be "local" or a scheduler address such as "tls://10.0.1.5:8786"')
    return value


# Every string setting is Text: checked for control characters before its own rule.
Text = Annotated[str, AfterValidator(_printable)]
Port = Annotated[int, AfterValidator(_between(1, 65535))]
Seconds = Annotated[float, AfterValidator(_between(1, 3600))]
# Fractions allowed; a year at most.
Minutes = Annotated[float, AfterValidator(_between(0, 525_600))]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ServerSettings(_Section):
    ip: Annotated[Text, AfterValidator(_ip_address)] = "0.0.0.0"
    port: Port = 8888
    default_url: Annotated[Text, AfterValidator(_url_path)] = "/lab"
    base_url: Annotated[Text, AfterValidator(_base_url)] = "/"
    root_dir: Annotated[Text, AfterValidator(_absolute_or_empty)] = ""
    user: Annotated[Text, AfterValidator(_account_name)] = "jupyter-remote"
    jupyter: Annotated[Text, AfterValidator(_absolute_or_empty)] = ""
    extra_args: list[Text] = []


class AuthSettings(_Section):
    password_file: Annotated[Text, AfterValidator(_non_empty)] = "password"
    password_hash: Annotated[Text, AfterValidator(_password_hash)] = ""
    rate_limit_per_minute: Annotated[int, AfterValidator(_between(0, 100_000))] = 10


class TlsSettings(_Section):
    mode: Annotated[Text, AfterValidator(_one_of(*TLS_MODES))] = "self-signed"
    hostnames: list[Annotated[Text, AfterValidator(_hostname)]] = []
    validity_days: Annotated[int, AfterValidator(_between(1, MAX_VALIDITY_DAYS))] = 365
    renew_before_days: Annotated[int, AfterValidator(_between(1, MAX_VALIDITY_DAYS))] = 30
    cloud_metadata: bool = True
    cert_file: Annotated[Text, AfterValidator(_absolute_or_empty)] = ""
    key_file: Annotated[Text, AfterValidator(_absolute_or_empty)] = ""
    acme_directory: Annotated[Text, AfterValidator(_acme_directory)] = LETS_ENCRYPT
    acme_email: Annotated[Text, AfterValidator(_email_or_empty)] = ""
    acme_http_port: Annotated[int, AfterValidator(_between(0, 65535))] = 80
    acme_ca_bundle: Annotated[Text, AfterValidator(_absolute_or_empty)] = ""


class KernelSettings(_Section):
    python: Annotated[Text, AfterValidator(_absolute_or_empty)] = ""
    packages: list[Annotated[Text, AfterValidator(_requirement)]] = []
    cull_idle_minutes: Annotated[int, AfterValidator(_between(0, 525_600))] = 0


class DaskSettings(_Section):
    enabled: bool = False
    cluster: Annotated[Text, AfterValidator(_dask_cluster)] = "local"


class IdleSettings(_Section):
    stop_after_minutes: Minutes = 0
    action: Annotated[str, AfterValidator(_one_of(*IDLE_ACTIONS))] = "poweroff"
    warn_minutes: Minutes = 10


class SuperviseSettings(_Section):
    start_timeout: Seconds = 120
    health_interval: Seconds = 10
    stop_timeout: Seconds = 10


class PathSettings(_Section):
    state_dir: Annotated[Text, AfterValidator(_absolute_or_empty)] = ""
    runtime_dir: Annotated[Text, AfterValidator(_absolute_or_empty)] = ""


class SettingsModel(_Section):
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    tls: TlsSettings = TlsSettings()
    kernel: KernelSettings = KernelSettings()
    dask: DaskSettings = DaskSettings()
    idle: IdleSettings = IdleSettings()
    supervise: SuperviseSettings = SuperviseSettings()
    paths: PathSettings = PathSettings()


# --- loading ------------------------------------------------------------------------------------


def load(path: Path, *, euid: int | None = None) -> Settings:
    """Read and validate one settings file; raise SettingsError with every problem, one a line."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SettingsError(f"{path}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path}: {_toml_error(str(error))}") from None
    return validate(document, path, euid=os.geteuid() if euid is None else euid)


def validate(document: dict[str, Any], path: Path, *, euid: int) -> Settings:
    try:
        model = SettingsModel.model_validate(document)
    except ValidationError as error:
        lines = (f"{path}: {_describe(e, document)}" for e in error.errors())
        raise SettingsError(*lines) from None
    settings = Settings.from_sections(model.model_dump(), path)
    problems = _cross_checks(settings, euid)
    if problems:
        raise SettingsError(*(f"{path}: {problem}" for problem in problems))
    return settings


def _cross_checks(settings: Settings, euid: int) -> list[str]:
    """Rules that tie keys together or depend on this machine."""
    problems = []
    server, tls = settings.server, settings.tls
    if tls.mode == "off" and not is_loopback(server.ip):
        problems.append(
            '[tls] mode: "off" is accepted only with a loopback [server] ip '
            f'("127.0.0.1" or "::1"), got ip {json.dumps(server.ip)}'
        )
    if tls.renew_before_days >= tls.validity_days:
        problems.append(
            f"[tls] renew_before_days: must be less than validity_days ({tls.validity_days}), "
            f"got {tls.renew_before_days}"
        )
    if tls.mode == "files":
        for key in ("cert_file", "key_file"):
            if not getattr(tls, key):
                problems.append(f'[tls] {key}: required when mode = "files"')
    if tls.mode == "acme":
        problems += _acme_checks(settings)
    if server.jupyter and not os.access(server.jupyter, os.X_OK):
        problems.append(
            f"[server] jupyter: not an executable file, got {json.dumps(server.jupyter)}")
    if euid == 0:
        # Run by root, the daemon serves as server.user; run by anyone else, as themselves.
        try:
            account = pwd.getpwnam(server.user)
        except KeyError:
            problems.append(
                f"[server] user: no such account, got {json.dumps(server.user)} "
                f"(create it: useradd --system --create-home {server.user})"
            )
        else:
            if account.pw_uid == 0:
                problems.append(
                    f"[server] user: must not be root (uid 0), got {json.dumps(server.user)}")
            else:
                group = privileged_group(account)
                if group:
                    problems.append(
                        f"[server] user: {json.dumps(server.user)} is in the privileged group "
                        f"{json.dumps(group)}, and every notebook would be too: use an account "
                        "without it"
                    )
        problems += _untrusted_paths(settings)
    return problems


def _acme_checks(settings: Settings) -> list[str]:
    tls = settings.tls
    problems = []
    if tls.acme_http_port and tls.acme_http_port == settings.server.port:
        problems.append("[tls] acme_http_port: must differ from [server] port (HTTPS is served "
                        f"there), got {tls.acme_http_port}")
    if tls.acme_ca_bundle:
        try:
            text = Path(tls.acme_ca_bundle).read_text(encoding="ascii", errors="replace")
        except OSError as error:
            problems.append(
                f"[tls] acme_ca_bundle: cannot read {tls.acme_ca_bundle}: {error.strerror}")
        else:
            if "-----BEGIN CERTIFICATE-----" not in text:
                problems.append(f"[tls] acme_ca_bundle: not a PEM certificate file, "
                                f"got {json.dumps(tls.acme_ca_bundle)}")
    return problems


def _untrusted_paths(settings: Settings) -> list[str]:
    """Paths root writes, or reads secrets from, that another user could replace."""
    tls = settings.tls
    paths = {
        "[paths] state_dir": settings.state_dir,
        "[paths] runtime_dir": settings.runtime_dir,
        "[auth] password_file": None if settings.auth.password_hash else settings.password_path,
        "[tls] cert_file": Path(tls.cert_file) if tls.mode == "files" and tls.cert_file else None,
        "[tls] key_file": Path(tls.key_file) if tls.mode == "files" and tls.key_file else None,
    }
    problems = []
    for key, path in paths.items():
        reason = untrusted(path) if path else None
        if reason:
            problems.append(f"{key}: refused, {reason} (root must be the only one who can "
                            f"replace it), got {json.dumps(str(path))}")
    return problems


def privileged_group(account: pwd.struct_passwd) -> str | None:
    """The first privileged group `account` is in (its primary group of gid 0 counts), or None."""
    if account.pw_gid == 0:
        return _group_name(0)
    primary = _group_name(account.pw_gid)
    for name in PRIVILEGED_GROUPS:
        try:
            group = grp.getgrnam(name)
        except KeyError:
            continue
        if name == primary or account.pw_name in group.gr_mem:
            return name
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


_TYPE_MESSAGES = {
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
}


def _describe(error: Any, document: dict[str, Any]) -> str:
    """One pydantic error as `[section] key: message, got value` (the value where it may show)."""
    location = error["loc"]
    section, key_path = _escape(str(location[0])), location[1:]
    where = f"[{section}]" + (" " + _key_path(key_path) if key_path else "")
    if error["type"] == "extra_forbidden":
        if not key_path and not isinstance(document.get(location[0]), dict):
            owners = [name for name, field in SettingsModel.model_fields.items()
                      if location[0] in field.annotation.model_fields]  # type: ignore[union-attr]
            hint = f" (did you mean [{owners[0]}] {section}?)" if owners else ""
            return f"{section}: a key outside any section{hint}"
        if not key_path:
            suggestion = _suggest(section, SettingsModel.model_fields, "[%s]")
            return f"[{section}]: unknown section{suggestion}"
        known = SettingsModel.model_fields[location[0]].annotation.model_fields  # type: ignore[union-attr]
        return f"{where}: unknown key{_suggest(_escape(str(key_path[-1])), known, '%s')}"
    if error["type"] == "jupyter_remote":
        message = error["msg"]
    else:
        message = _TYPE_MESSAGES.get(error["type"]) or error["msg"][:1].lower() + error["msg"][1:]
    if not _may_show(location) or _carries_credentials(error["input"]):
        return f"{where}: {message}"
    return f"{where}: {message}, got {_show(error['input'])}"


def _carries_credentials(value: Any) -> bool:
    """A URL with user information ("scheme://user:password@host") may hold a password."""
    return isinstance(value, str) and "://" in value and "@" in value


def _may_show(location: tuple[Any, ...]) -> bool:
    """Whether the value at `location` may appear in an error: a known key that holds no secret.

    A whole section given as a value (`auth = "..."`) may be a secret pasted in the wrong place.
    """
    if len(location) < 2 or (location[0], location[1]) in SECRET_KEYS:
        return False
    model = SettingsModel.model_fields.get(str(location[0]))
    return model is not None and location[1] in model.annotation.model_fields  # type: ignore[union-attr]


def _key_path(parts: tuple[Any, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + _escape(str(part))
    return text


def _suggest(word: str, known: Any, style: str) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {style % close[0]}?)" if close else ""


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (str, list)):
        return _escape(json.dumps(value, default=str, ensure_ascii=False))
    return str(value)


def _escape(text: str) -> str:
    """Control characters as \\uXXXX: an error stays one line and cannot forge another."""
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) == "Cc" else c for c in text)


def _toml_error(message: str) -> str:
    # tomllib says e.g. "Invalid value (at line 3, column 8)"; lead with the place, as compilers do.
    found = re.match(r"^(.*) \(at line (\d+), column (\d+)\)$", message)
    if not found:
        return f"invalid TOML: {message}"
    what, line, column = found.groups()
    return f"line {line}, column {column}: invalid TOML: {what[:1].lower() + what[1:]}"
