"""The TLS a client meets, judged by sslyze against Mozilla's "intermediate" configuration: TLS 1.2
with forward-secret AEAD suites only, and TLS 1.3; the same after a renewal swapped the context.

sslyze 6 requires cryptography<47 while the project locks a newer one, so it runs from an
environment of its own, made here from tests/sslyze/requirements.lock (hash-locked) and reused while
that lock is unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import cli, wait_until
from test_tls_live import served_fingerprint

from supervisor.accounts import serving_account
from supervisor.loading import load
from supervisor.tls.store import CertificateStore

SSLYZE = Path(__file__).resolve().parent / "sslyze"
# Stronger groups than the profile names: OpenSSL offers them by default, Python 3.11 cannot drop
# them without dropping X25519 or P-256 too (set_ecdh_curve sets one group); they weaken nothing.
EXTRA_GROUPS = {"X448", "secp521r1"}
MOZILLA_TLS12 = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}


@pytest.fixture(scope="session")
def sslyze_python() -> Path:
    """The Python of an environment with sslyze, beside the tests' own (root's when run as root)."""
    venv = Path(sys.prefix).with_name(Path(sys.prefix).name + "-sslyze")
    lock = SSLYZE / "requirements.lock"
    stamp = venv / "requirements.lock"
    if not (stamp.is_file() and stamp.read_bytes() == lock.read_bytes()):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        installed = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "--require-hashes", "-r", str(lock)],
            capture_output=True, text=True, timeout=600, check=False,
        )
        assert installed.returncode == 0, installed.stderr[-4000:]
        shutil.copyfile(lock, stamp)
    return venv / "bin" / "python"


def scan(python: Path, port: int, ca: str) -> dict[str, Any]:
    result = subprocess.run([str(python), str(SSLYZE / "scan.py"), "127.0.0.1", str(port), ca],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert "error" not in report, report["error"]
    return report


def assert_intermediate(report: dict[str, Any]) -> None:
    """Compliant, but for groups stronger than the profile's; and no CBC, SHA-1 or TLS < 1.2."""
    issues = dict(report["issues"])
    curves = set(report["curves"])
    profile_groups = {"X25519", "prime256v1", "secp256r1", "secp384r1"}
    if "tls_curves" in issues and curves - profile_groups <= EXTRA_GROUPS:
        del issues["tls_curves"]
    assert issues == {}, issues
    accepted = report["accepted"]
    for old in ("ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites",
                "tls_1_1_cipher_suites"):
        assert accepted[old] == [], (old, accepted[old])
    tls12 = accepted["tls_1_2_cipher_suites"]
    assert tls12 and set(tls12) <= MOZILLA_TLS12, tls12
    assert accepted["tls_1_3_cipher_suites"]
    assert {"X25519", "secp384r1"} <= curves


def test_tls_meets_mozilla_intermediate_also_after_a_renewal(serving, sslyze_python):
    report = scan(sslyze_python, serving.port, serving.ca)
    print(f"\nsslyze: TLS 1.2 {report['accepted']['tls_1_2_cipher_suites']}, "
          f"TLS 1.3 {report['accepted']['tls_1_3_cipher_suites']}, groups {report['curves']}, "
          f"issues {report['issues']}")
    assert_intermediate(report)

    # A renewal builds a new context in the extension: it must be as strict as the first.
    before = served_fingerprint(serving.port, serving.ca)[0]
    result = cli("cert", "renew", "--settings", str(serving.settings))
    assert result.returncode == 0, result.stderr
    settings = load(serving.settings)
    new = (CertificateStore(settings.state_dir, serving_account(settings)).meta() or {})["sha256"]
    assert new != before
    wait_until(lambda: served_fingerprint(serving.port, serving.ca)[0] == new, 10,
               "the renewal to be served")
    assert_intermediate(scan(sslyze_python, serving.port, serving.ca))
