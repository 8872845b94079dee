"""Certificates from an ACME certificate authority (RFC 8555), such as Let's Encrypt.

Built on certbot's `acme` package and `josepy`: they sign every request (JWS) and speak the
protocol; this module decides what to order, publishes the challenge answers for the extension
inside Jupyter to serve, and turns every way an order can fail into an outcome the daemon can act
on without hammering the CA.

    <state_dir>/tls/acme/                       root alone (0700)
        accounts/<sha256 of directory URL>/     one account per CA, reused across restarts
            key.pem  account.json
        state.json                              the last failure: error, next attempt, settings
    <state_dir>/tls/acme-challenges/            readable by the Jupyter account, answers only
        http-01/<token>                         the key authorization, served on acme_http_port
        tls-alpn-01/<identifier>.pem            RFC 8737 certificate and key, for ALPN acme-tls/1

One call makes at most one bounded attempt (ORDER_TIMEOUT) and returns; it never loops.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import ipaddress
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from supervisor import __version__
from supervisor.files import write_atomic
from supervisor.settings import Settings
from supervisor.tls.names import CloudIdentity, Names, _is_ip
from supervisor.tls.policy import certificate_names
from supervisor.tls.store import CertificateStore, challenge_dir

if TYPE_CHECKING:
    from supervisor.tls import CertificateInfo

log = logging.getLogger(__name__)

ORDER_TIMEOUT = 90.0  # seconds one attempt may take, from the directory to the certificate
NETWORK_TIMEOUT = 20  # seconds for one HTTP request to the CA
STATE = "state.json"
SHORTLIVED = "shortlived"
ACME_TLS_1 = "acme-tls/1"
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # id-pe-acmeIdentifier, RFC 8737
# Backoff after a failure: the first wait by kind, doubled per failure in a row, at most MAX_WAIT.
FIRST_WAIT = {"unreachable": 60.0, "challenge": 300.0, "server": 120.0, "rate-limited": 600.0}
MAX_WAIT = 6 * 3600.0
JITTER = 0.2  # +-20 %: many machines restarted together must not ask the CA at one instant
# Problem types after which retrying with the same settings cannot help (RFC 8555 section 6.7).
REJECTED = {
    "rejectedIdentifier",
    "unsupportedIdentifier",
    "caa",
    "invalidContact",
    "unsupportedContact",
    "externalAccountRequired",
    "malformed",
    "badCSR",
}


# --- where things live --------------------------------------------------------------------------


def acme_dir(store: CertificateStore) -> Path:
    return store.root / "acme"


def _account_dir(store: CertificateStore, directory_url: str) -> Path:
    return acme_dir(store) / "accounts" / hashlib.sha256(directory_url.encode()).hexdigest()[:16]


# --- pure decisions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RenewalWindow:
    """A CA's suggested renewal window (RFC 9773 renewalInfo)."""

    start: datetime
    end: datetime


def acme_identifiers(settings: Settings, cloud: CloudIdentity | None) -> Names:
    """What a publicly trusted certificate can name: the configured names and the public IPv4.

    The machine's own host names and private addresses are left out: a public CA cannot validate
    them, and one refused name fails the whole order. The instance's ec2-...amazonaws.com name is
    left out too (Let's Encrypt refuses it by policy); its public IPv4 is the way without a domain.
    """
    dns, ips = set(), set()
    for name in settings.tls.hostnames:
        if _is_ip(name):
            ips.add(str(ipaddress.ip_address(name)))
        else:
            dns.add(name.lower().rstrip("."))
    if cloud and cloud.public_ipv4:
        ips.add(cloud.public_ipv4)
    return Names.of(dns, ips)


def choose_profile(profiles: dict[str, str] | None, names: Names) -> str | None:
    """The profile to order with, or None to order plainly (a CA without profiles, or no choice).

    An IP address is allowed only in short-lived certificates at Let's Encrypt, so with an IP
    identifier the short-lived profile is asked for: by its name, else by its description.
    Names alone take the CA's default profile.
    """
    if not profiles or not names.ips:
        return None
    if SHORTLIVED in profiles:
        return SHORTLIVED
    for name, description in sorted(profiles.items()):
        text = f"{name} {description}".lower()
        if "short-lived" in text or "shortlived" in text or "short lived" in text:
            return name
    return None


def renewal_reason(
    not_before: datetime, not_after: datetime, now: datetime, window: RenewalWindow | None = None
) -> str | None:
    """Why an ACME certificate must be renewed at `now`, or None while it is good.

    Inside the CA's renewal window when it suggests one (RFC 9773); else when a third of the
    lifetime is left (a 6-day certificate after 4 days, a 90-day one after 60), as Let's Encrypt
    advises, so that a failing CA leaves days of retries before anything expires.
    """
    if now >= not_after:
        return f"it expired on {not_after:%Y-%m-%d %H:%M} UTC"
    if window is not None:
        if now >= window.start:
            return f"inside the CA's renewal window (from {window.start:%Y-%m-%d %H:%M} UTC)"
        return None
    lifetime = not_after - not_before
    if not_after - now <= lifetime / 3:
        return f"a third of its lifetime is left (until {not_after:%Y-%m-%d %H:%M} UTC)"
    return None


def renewal_due_at(
    not_before: datetime, not_after: datetime, window: RenewalWindow | None
) -> datetime:
    return window.start if window is not None else not_after - (not_after - not_before) / 3


def backoff_seconds(
    kind: str, failures: int, retry_after: float | None, draw: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before the next attempt after `failures` failures in a row of `kind`.

    Exponential with jitter, bounded by MAX_WAIT; never sooner than the CA's Retry-After.
    `draw` returns a number in [0, 1): injected so tests can pin it.
    """
    wait = min(FIRST_WAIT.get(kind, FIRST_WAIT["server"]) * 2 ** max(failures - 1, 0), MAX_WAIT)
    wait *= 1 + JITTER * (2 * draw() - 1)
    return max(wait, retry_after or 0.0)


def settings_fingerprint(settings: Settings, names: Names) -> str:
    """What an attempt depends on: a change here is worth a new try, even after a refusal."""
    tls = settings.tls
    document = json.dumps(
        [
            tls.acme_directory,
            tls.acme_email,
            tls.acme_http_port,
            tls.acme_ca_bundle,
            settings.server.port,
            list(names.dns),
            list(names.ips),
        ]
    )
    return hashlib.sha256(document.encode()).hexdigest()[:16]


# --- failures -----------------------------------------------------------------------------------


class AcmeFailure(Exception):
    """One attempt failed. `kind`: unreachable | challenge | rejected | rate-limited | server."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


@dataclass
class FailureState:
    """Persisted so that a restart (or the next hourly look) does not ask the CA again too soon."""

    error: str
    kind: str
    failures: int  # in a row
    next_attempt: str  # ISO 8601; "" = not until the settings change
    fingerprint: str

    @property
    def blocked(self) -> bool:
        return not self.next_attempt


def load_state(store: CertificateStore) -> FailureState | None:
    try:
        return FailureState(**json.loads((acme_dir(store) / STATE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _save_state(store: CertificateStore, state: FailureState | None) -> None:
    path = acme_dir(store) / STATE
    if state is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, json.dumps(asdict(state), indent=1).encode(), mode=0o600)


def record_failure(
    store: CertificateStore,
    failure: AcmeFailure,
    fingerprint: str,
    now: datetime,
    draw: Callable[[], float] = random.random,
) -> FailureState:
    previous = load_state(store)
    failures = previous.failures + 1 if previous and previous.fingerprint == fingerprint else 1
    if failure.kind == "rejected":
        next_attempt = ""
        error = f"{failure.message}; no new attempt until the settings change"
    else:
        when = now + timedelta(
            seconds=backoff_seconds(failure.kind, failures, failure.retry_after, draw)
        )
        next_attempt = when.isoformat()
        error = f"{failure.message}; next attempt at {when:%Y-%m-%d %H:%M:%S} UTC"
    state = FailureState(error, failure.kind, failures, next_attempt, fingerprint)
    _save_state(store, state)
    return state


def describe_problem(problem: Any, identifier: str, where: str) -> AcmeFailure:
    """An ACME problem document (acme.messages.Error) as a failure an operator can act on."""
    code = getattr(problem, "code", None) or "serverInternal"
    detail = getattr(problem, "detail", None) or str(problem)
    if code in REJECTED:
        return AcmeFailure("rejected", f"the CA refused {identifier}: {detail}")
    if code == "rateLimited":
        return AcmeFailure(
            "rate-limited", f"the CA's rate limit: {detail}", getattr(problem, "retry_after", None)
        )
    if code in ("connection", "dns", "unauthorized", "incorrectResponse", "tls"):
        return AcmeFailure(
            "challenge",
            f"the CA could not validate {identifier} ({where}): {detail}: "
            f"{_advice(code, identifier, where)}",
        )
    return AcmeFailure("server", f"the CA answered {code}: {detail}")


def _advice(code: str, identifier: str, where: str) -> str:
    if code == "dns":
        return f"make {identifier} resolve to this machine's public address"
    if code == "connection":
        return f"open {where} of {identifier} to the internet (on AWS: in the security group)"
    return f"make sure {identifier} reaches this machine, not another server, on {where}"


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """An HTTP Retry-After header (seconds or an HTTP date) as seconds from `now`."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - now).total_seconds(), 0.0)


# --- challenge answers --------------------------------------------------------------------------


def tls_alpn_certificate(identifier: str, key_authorization: str) -> bytes:
    """RFC 8737: a self-signed certificate for `identifier` whose critical acmeIdentifier
    extension holds the SHA-256 of the key authorization; PEM of certificate then key."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode()).digest()
    name = (
        x509.IPAddress(ipaddress.ip_address(identifier))
        if _is_ip(identifier)
        else x509.DNSName(identifier)
    )
    now = datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACME challenge")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        # DER OCTET STRING of the 32-byte digest.
        .add_extension(
            x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, b"\x04\x20" + digest), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def prepare_challenge_dir(state_dir: Path) -> Path:
    """Make the folders the daemon writes answers to and the Jupyter account reads them from."""
    root = challenge_dir(state_dir)
    for folder in (root, root / "http-01", root / "tls-alpn-01"):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)
    return root


# --- one attempt --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    chain_pem: bytes
    key_pem: bytes
    leaf: x509.Certificate
    account: str
    profile: str
    window: RenewalWindow | None
    ari_url: str


def ensure(
    settings: Settings,
    store: CertificateStore,
    now: datetime,
    renew_because: str = "",
    *,
    jupyter_answers: bool = True,
    draw: Callable[[], float] = random.random,
) -> CertificateInfo:
    """Keep a servable certificate live and, when one is due, make one bounded ACME attempt.

    `error` in the outcome says why the CA's certificate is not (yet) live,
    `next_attempt_after` when to call again, `retry_blocked` that only a settings change helps.
    The caller holds the store's lock.
    """
    from supervisor.tls import lifecycle

    cloud = lifecycle.current_cloud_identity(settings, store, remember=True)
    names = acme_identifiers(settings, cloud)
    fingerprint = settings_fingerprint(settings, names)
    live = lifecycle.load_live(store)
    meta = store.meta() or {}
    from_ca = (
        live is not None
        and meta.get("source") == "acme"
        and meta.get("directory") == settings.tls.acme_directory
    )
    if not from_ca and (
        live is None or meta.get("source") == "self-signed" or live.not_valid_after_utc <= now
    ):
        # Until the CA's first certificate, the local CA's keeps the server reachable.
        lifecycle.self_signed(settings, store, now, "")
    if not names.dns and not names.ips:
        error = (
            f"{settings.source}: [tls] hostnames: no name for the ACME CA to certify: add this "
            "machine's public DNS name or IP address (or run on AWS with cloud_metadata)"
        )
        return lifecycle.outcome(settings, store, now, error=error, retry_blocked=True)

    current = live if from_ca else None
    window = _ari_window(meta) if current is not None else None
    if renew_because:
        reason = renew_because
    elif current is None:
        reason = "no certificate from the ACME CA yet"
    elif certificate_names(current) != names:
        reason = "the names changed"
    else:
        start, end = current.not_valid_before_utc, current.not_valid_after_utc
        reason = renewal_reason(start, end, now, window) or ""
    if not reason and current is not None:
        due = renewal_due_at(current.not_valid_before_utc, current.not_valid_after_utc, window)
        return lifecycle.outcome(settings, store, now,
                                 next_attempt_after=max((due - now).total_seconds(), 0))
    if not jupyter_answers:
        # Challenges are answered by the extension inside Jupyter: order once it serves.
        return lifecycle.outcome(settings, store, now, next_attempt_after=0.0)

    state = load_state(store)
    if state is not None and state.fingerprint == fingerprint and not renew_because:
        if state.blocked:
            return lifecycle.outcome(settings, store, now, error=state.error, retry_blocked=True)
        wait = (datetime.fromisoformat(state.next_attempt) - now).total_seconds()
        if wait > 0:
            return lifecycle.outcome(settings, store, now, error=state.error,
                                     next_attempt_after=wait)

    log.info(
        "ordering a certificate from %s for %s (%s)",
        settings.tls.acme_directory,
        ", ".join([*names.dns, *names.ips]),
        reason,
    )
    try:
        issued = _attempt(settings, store, names)
    except AcmeFailure as failure:
        state = record_failure(store, failure, fingerprint, now, draw)
        log.warning("ACME: %s", state.error)
        next_attempt = (
            (datetime.fromisoformat(state.next_attempt) - now).total_seconds()
            if state.next_attempt
            else None
        )
        return lifecycle.outcome(
            settings, store, now, error=state.error, next_attempt_after=next_attempt,
            retry_blocked=state.blocked,
        )
    due = renewal_due_at(
        issued.leaf.not_valid_before_utc, issued.leaf.not_valid_after_utc, issued.window
    )
    meta = {
        **lifecycle.version_meta("acme", issued.leaf, now),
        "issuer": issued.leaf.issuer.rfc4514_string(),
        "directory": settings.tls.acme_directory,
        "account": issued.account,
        "profile": issued.profile,
        "next_renewal": due.isoformat(),
    }
    if issued.window is not None:
        meta["ari"] = {
            "url": issued.ari_url,
            "start": issued.window.start.isoformat(),
            "end": issued.window.end.isoformat(),
            "checked": now.isoformat(),
        }
    version = store.add_version(issued.chain_pem, issued.key_pem, meta)
    store.switch(version)
    store.prune()
    _save_state(store, None)
    log.info(
        "certificate from %s issued (%s), valid until %s; renewal from %s",
        meta["issuer"],
        reason,
        f"{issued.leaf.not_valid_after_utc:%Y-%m-%d %H:%M}",
        f"{due:%Y-%m-%d %H:%M} UTC",
    )
    return lifecycle.outcome(
        settings,
        store,
        now,
        issued=True,
        reason=reason,
        next_attempt_after=max((due - now).total_seconds(), 0.0),
    )


def _attempt(settings: Settings, store: CertificateStore, names: Names) -> Issued:
    """order(), with any surprise turned into a failure: a bug there must not stop the serving."""
    try:
        return order(settings, store, names)
    except (AcmeFailure, OSError):  # OSError: the store's own files, reported by lifecycle
        raise
    except Exception as error:  # noqa: BLE001
        log.exception("ACME: unexpected failure")
        raise AcmeFailure("server", f"internal error in the ACME exchange: {error!r}") from None


def _ari_window(meta: dict[str, Any]) -> RenewalWindow | None:
    ari = meta.get("ari")
    if not ari:
        return None
    return RenewalWindow(datetime.fromisoformat(ari["start"]), datetime.fromisoformat(ari["end"]))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def order(settings: Settings, store: CertificateStore, names: Names) -> Issued:
    """One order, from the directory to the certificate, in about ORDER_TIMEOUT; raises
    AcmeFailure."""
    import josepy as jose
    import requests
    from acme import client, errors, messages

    _register_tls_alpn()  # before the first authorization is read, or its challenge stays unknown
    url = settings.tls.acme_directory
    bound = time.monotonic() + ORDER_TIMEOUT
    account_key = _account_key(store, url)
    net = _network(settings, account_key, bound)
    where = "the ACME server"
    published: list[Path] = []
    try:
        directory = client.ClientV2.get_directory(url, net)
        acme_client = client.ClientV2(directory, net)
        account = _account(acme_client, store, settings)
        profile = choose_profile(directory.meta.profiles if directory.meta else None, names)
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        from acme import crypto_util

        csr = crypto_util.make_csr(
            key_pem, domains=list(names.dns), ipaddrs=[ipaddress.ip_address(ip) for ip in names.ips]
        )
        where = "the order"
        orderr = acme_client.new_order(csr, profile=profile)
        for authzr in orderr.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue  # validated recently for this account: nothing to answer
            identifier = authzr.body.identifier.value
            challb, where = _pick_challenge(settings, authzr, identifier)
            published.append(_publish(settings, store, challb, identifier, account_key))
            acme_client.answer_challenge(challb, challb.chall.response(account_key))
        # The library polls until a wall-clock deadline of its own.
        deadline = dt.datetime.now() + timedelta(seconds=max(bound - time.monotonic(), 1))
        orderr = acme_client.poll_authorizations(orderr, deadline)
        where = "the finalization"
        orderr = acme_client.finalize_order(orderr, deadline)
    except requests.exceptions.RequestException as error:
        raise AcmeFailure(
            "unreachable", f"cannot reach the ACME server {url}: {_network_reason(error)}"
        ) from None
    except errors.ValidationError as error:
        authzr = error.failed_authzrs[0]
        problem = next((c.error for c in authzr.body.challenges if c.error is not None), None)
        raise describe_problem(problem, authzr.body.identifier.value, where) from None
    except messages.Error as error:
        limited = None
        if error.code == "rateLimited":
            limited = _RateLimited(
                error, retry_after_seconds(net.last_retry_after, datetime.now(dt.UTC))
            )
        identifiers = ", ".join([*names.dns, *names.ips])
        raise describe_problem(limited or error, identifiers, where) from None
    except errors.TimeoutError:
        raise AcmeFailure(
            "server", f"the CA did not finish the order within {ORDER_TIMEOUT:.0f} s"
        ) from None
    except errors.Error as error:
        raise AcmeFailure("server", f"the ACME exchange failed at {where}: {error}") from None
    except jose.DeserializationError as error:
        raise AcmeFailure(
            "server", f"the CA sent something unreadable at {where}: {error}"
        ) from None
    finally:
        for path in published:
            path.unlink(missing_ok=True)
    chain_pem = orderr.fullchain_pem.encode()
    leaf = x509.load_pem_x509_certificate(chain_pem)
    window, ari_url = fetch_renewal_window(net, directory, leaf)
    return Issued(chain_pem, key_pem, leaf, account, profile or "", window, ari_url)


@dataclass(frozen=True)
class _RateLimited:
    """A rateLimited problem with the Retry-After its HTTP answer carried."""

    problem: Any
    retry_after: float | None
    code: str = "rateLimited"

    @property
    def detail(self) -> str:
        return self.problem.detail or "too many requests"


def _network(settings: Settings, account_key: Any, deadline: float) -> Any:
    """The library's HTTP client, bounded by `deadline` (time.monotonic()) as a whole."""
    import josepy as jose
    from acme import client, errors

    class Network(client.ClientNetwork):
        """Remembers the last Retry-After: the library's problem documents lose the headers."""

        last_retry_after: str | None = None

        def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.TimeoutError()
            kwargs["timeout"] = min(NETWORK_TIMEOUT, left)
            response = super()._send_request(method, url, *args, **kwargs)
            self.last_retry_after = response.headers.get("Retry-After")
            return response

    net = Network(
        key=account_key,
        alg=jose.ES256,
        verify_ssl=_trust(settings),  # type: ignore[arg-type]  # requests' verify: a bundle too
        user_agent=f"jupyter-remote/{__version__}",
    )
    # A service's environment is not an operator's shell: no proxy or CA bundle from variables.
    net.session.trust_env = False
    return net


def _trust(settings: Settings) -> str | bool:
    if settings.tls.acme_ca_bundle:
        return settings.tls.acme_ca_bundle
    cafile = ssl.get_default_verify_paths().cafile
    return cafile if cafile and os.path.exists(cafile) else True


def _network_reason(error: Exception) -> str:
    # requests nests the cause several levels deep; the innermost says it best.
    cause: BaseException = error
    while cause.__cause__ is not None or (cause.args and isinstance(cause.args[0], BaseException)):
        cause = cause.__cause__ if cause.__cause__ is not None else cause.args[0]
    text = str(cause)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"its HTTPS certificate is not trusted ({text}); "
            "for a private CA set [tls] acme_ca_bundle"
        )
    return text or type(cause).__name__


def _account_key(store: CertificateStore, directory_url: str) -> Any:
    import josepy as jose

    folder = _account_dir(store, directory_url)
    for path in (acme_dir(store), folder.parent, folder):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    key_path = folder / "key.pem"
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        key = ec.generate_private_key(ec.SECP256R1())
        write_atomic(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            mode=0o600,
        )
        write_atomic(folder / "directory.txt", directory_url.encode(), mode=0o600)
    return jose.JWKEC(key=key)


def _account(acme_client: Any, store: CertificateStore, settings: Settings) -> str:
    """The account URL: registered once per directory, then reused (also across upgrades)."""
    from acme import errors, messages

    path = _account_dir(store, settings.tls.acme_directory) / "account.json"
    known = _read_json(path)
    if known.get("uri") and known.get("email") == settings.tls.acme_email:
        acme_client.net.account = messages.RegistrationResource(
            uri=known["uri"], body=messages.Registration()
        )
        return known["uri"]
    registration = messages.NewRegistration.from_data(
        email=settings.tls.acme_email or None, terms_of_service_agreed=True
    )
    try:
        uri = acme_client.new_account(registration).uri
    except errors.ConflictError as existing:  # this key has an account already: the CA's URL
        uri = existing.location
        acme_client.net.account = messages.RegistrationResource(
            uri=uri, body=messages.Registration()
        )
        if known.get("email") != settings.tls.acme_email:
            acme_client.update_registration(
                acme_client.net.account,
                messages.Registration.from_data(email=settings.tls.acme_email or None),
            )
    write_atomic(
        path, json.dumps({"uri": uri, "email": settings.tls.acme_email}).encode(), mode=0o600
    )
    log.info("ACME account %s", uri)
    return uri


def _pick_challenge(settings: Settings, authzr: Any, identifier: str) -> tuple[Any, str]:
    offered = {c.chall.typ: c for c in authzr.body.challenges}
    if settings.tls.acme_http_port and "http-01" in offered:
        return offered["http-01"], "port 80"
    if "tls-alpn-01" in offered:
        return offered["tls-alpn-01"], "port 443"
    hint = " (set [tls] acme_http_port to answer http-01)" if "http-01" in offered else ""
    raise AcmeFailure(
        "rejected",
        f"the CA offers no challenge jupyter-remote answers for {identifier}: "
        f"{', '.join(sorted(offered))}{hint}",
    )


def _publish(
    settings: Settings, store: CertificateStore, challb: Any, identifier: str, account_key: Any
) -> Path:
    root = prepare_challenge_dir(settings.state_dir)
    key_authorization = challb.chall.key_authorization(account_key)
    if challb.chall.typ == "http-01":
        path = root / "http-01" / challb.chall.encode("token")
        write_atomic(path, key_authorization.encode(), mode=0o644)
    else:
        path = root / "tls-alpn-01" / f"{identifier}.pem"
        write_atomic(
            path,
            tls_alpn_certificate(identifier, key_authorization),
            mode=store.key_mode,
            owner=store.key_owner,
        )
    return path


def _register_tls_alpn() -> None:
    """The acme package dropped its TLS-ALPN-01 classes; the key authorization is the same as
    HTTP-01's, so its own base classes describe the challenge (RFC 8737) completely."""
    from acme import challenges

    if "tls-alpn-01" in challenges.Challenge.TYPES:
        return

    @challenges.ChallengeResponse.register
    class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
        typ = "tls-alpn-01"

    @challenges.Challenge.register
    class TLSALPN01(challenges.KeyAuthorizationChallenge):
        response_cls = TLSALPN01Response
        typ = response_cls.typ

        def validation(self, account_key: Any, **unused: Any) -> str:
            return self.key_authorization(account_key)


def fetch_renewal_window(
    net: Any, directory: Any, leaf: x509.Certificate
) -> tuple[RenewalWindow | None, str]:
    """The CA's suggested renewal window (RFC 9773), when its directory offers renewalInfo."""
    from acme import client, messages

    try:
        base = directory["renewalInfo"]
    except KeyError:
        return None, ""
    url = f"{base.rstrip('/')}/{client._renewal_info_path_component(leaf)}"  # noqa: SLF001
    try:
        info = messages.RenewalInfo.from_json(net.get(url, content_type="application/json").json())
    except Exception as error:  # noqa: BLE001 - the lifetime rule still applies without it
        log.warning("ACME renewal information unavailable (%s): renewing by lifetime", error)
        return None, url
    window = info.suggested_window
    return RenewalWindow(
        window.start.astimezone(dt.UTC), window.end.astimezone(dt.UTC)
    ), url
