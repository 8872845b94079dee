"""A browser that offers gzip (or brotli) gets JupyterLab's bundles compressed, byte for byte the
files on disk, and never a compressed page or API answer (those carry secrets: BREACH). One that
offers neither still gets every file whole.
"""

from __future__ import annotations

import gzip
import re
import sys
from pathlib import Path

import brotli
import requests
from conftest import Serving
from support import wait_until

LAB_STATIC = Path(sys.prefix) / "share" / "jupyter" / "lab" / "static"  # the Jupyter under test


def fetch(client, path: str, encoding: str) -> requests.Response:
    """GET with this Accept-Encoding; the body as it crossed the wire (not decoded)."""
    response = client.session.get(f"{client.base}{path}", headers={"Accept-Encoding": encoding},
                                  stream=True, timeout=30)
    response.wire = response.raw.read(decode_content=False)
    return response


def hashed_bundle(page: str) -> str:
    """The first hashed bundle the /lab page loads, e.g. /static/lab/main.<hash>.js."""
    found = re.findall(r'src="([^"]*/static/lab/[^"]+\.js)[^"]*"', page)
    assert found, "the /lab page names no bundle under /static/lab/"
    return found[0].split("?")[0]


def test_static_bundles_gzip_and_secrets_never(serving: Serving) -> None:
    login = fetch(serving.client(), "/login", "gzip, deflate, br")
    assert login.status_code == 200 and b"_xsrf" in login.wire
    assert "Content-Encoding" not in login.headers, "the login page (with _xsrf) was compressed"
    client = serving.logged_in_client()
    page = fetch(client, "/lab", "gzip, deflate, br")
    assert page.status_code == 200
    assert "Content-Encoding" not in page.headers, "the /lab page was compressed"

    bundle = hashed_bundle(page.wire.decode())
    on_disk = (LAB_STATIC / bundle.rsplit("/", 1)[1]).read_bytes()
    for attempt in ("made now", "from the cache"):
        response = fetch(client, bundle, "gzip, deflate")
        assert response.status_code == 200, attempt
        assert response.headers.get("Content-Encoding") == "gzip", attempt
        assert "Accept-Encoding" in response.headers.get("Vary", ""), attempt
        assert "immutable" in response.headers.get("Cache-Control", ""), attempt
        assert response.headers["Content-Type"].split(";")[0] in ("application/javascript",
                                                                  "text/javascript"), attempt
        assert int(response.headers["Content-Length"]) == len(response.wire) < len(on_disk) / 2
        assert gzip.decompress(response.wire) == on_disk, attempt

    # brotli copies are made in the background after the first request: they come a little later.
    def in_brotli() -> requests.Response | None:
        response = fetch(client, bundle, "gzip, deflate, br")
        return response if response.headers.get("Content-Encoding") == "br" else None

    smaller = wait_until(in_brotli, 120, "the bundle served with brotli", interval=0.5)
    assert brotli.decompress(smaller.wire) == on_disk
    assert int(smaller.headers["Content-Length"]) == len(smaller.wire) < len(response.wire)
    assert fetch(client, bundle, "gzip").headers.get("Content-Encoding") == "gzip"

    plain = fetch(client, bundle, "identity")
    assert plain.status_code == 200
    assert "Content-Encoding" not in plain.headers
    assert plain.wire == on_disk
    no_header = client.session.get(f"{client.base}{bundle}", headers={"Accept-Encoding": None},
                                   timeout=30)
    assert no_header.content == on_disk and "Content-Encoding" not in no_header.headers

    # Theme CSS lives under /lab/api/ but is a package file (its URLs rewritten by the server).
    theme = "/lab/api/themes/@jupyterlab/theme-light-extension/index.css"
    as_sent = fetch(client, theme, "identity")
    assert as_sent.status_code == 200 and b"--jp-" in as_sent.wire
    packed = fetch(client, theme, "gzip")
    assert packed.headers.get("Content-Encoding") == "gzip"
    assert gzip.decompress(packed.wire) == as_sent.wire

    for api in ("/api/status", "/api/kernelspecs", "/api/contents"):
        answer = fetch(client, api, "gzip, deflate, br")
        assert answer.status_code == 200, api
        assert "Content-Encoding" not in answer.headers, f"{api} was compressed"
        assert answer.wire.lstrip().startswith(b"{") or answer.wire.lstrip().startswith(b"[")
