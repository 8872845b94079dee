"""Scan one TLS server with sslyze and check it against Mozilla's "intermediate" configuration.

Run by the Python of the sslyze environment (tests/sslyze/requirements.lock), not by the tests' own:
    python scan.py HOST PORT CA_FILE
Prints one JSON object: the checker's issues ({} when compliant) and what the server accepted.
"""

import json
import sys
import warnings
from pathlib import Path

from sslyze import (
    CertificateInfoExtraArgument, ScanCommandsExtraArguments, Scanner, ServerNetworkLocation,
    ServerScanRequest, ServerScanStatusEnum,
)
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER, MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration, TlsConfigurationEnum,
    check_server_against_tls_configuration,
)


def main(host: str, port: int, ca_file: str) -> None:
    # Its bundled trust stores hold old certificates that newer cryptography warns about.
    warnings.simplefilter("ignore")
    scanner = Scanner()
    scanner.queue_scans([ServerScanRequest(
        server_location=ServerNetworkLocation(host, port),
        scan_commands=SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        # Our own CA, so that the certificate's path validates as a browser that trusts it would.
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=Path(ca_file))),
    )])
    (result,) = list(scanner.get_results())
    if result.scan_status != ServerScanStatusEnum.COMPLETED:
        error = result.connectivity_error_trace
        trace = "".join(error.format()) if error else ""
        print(json.dumps({"error": f"scan not completed: {result.scan_status}: {trace}"}))
        return
    issues: dict[str, str] = {}
    try:
        check_server_against_tls_configuration(
            result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE))
    except ServerNotCompliantWithTlsConfiguration as error:
        issues = dict(error.issues)
    scans = result.scan_result
    accepted = {
        version: sorted(suite.cipher_suite.name
                        for suite in getattr(scans, version).result.accepted_cipher_suites)
        for version in ("ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites",
                        "tls_1_1_cipher_suites", "tls_1_2_cipher_suites", "tls_1_3_cipher_suites")
    }
    curves = sorted(curve.name for curve in scans.elliptic_curves.result.supported_curves or [])
    print(json.dumps({"issues": issues, "accepted": accepted, "curves": curves}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
