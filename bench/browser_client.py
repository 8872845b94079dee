"""The browser's side of bench/browser.py; runs inside the emulated link's network namespace.

Reads one JSON job on stdin (the server's URL, the password, the SPKI pins, a profile folder, where
to put screenshots), then with Debian's chromium driven by selenium: logs in through the form and
times submit -> the JupyterLab launcher visible, once with an empty cache and once more in a
restarted browser with the same profile (a warm cache, logged out). Prints one JSON result.

Bytes are Chrome's own count (CDP Network.loadingFinished encodedDataLength: headers and bodies
as they crossed the network, 0 for a cache hit) and the namespace side's interface counters (TCP,
TLS and all).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

LAUNCHER = (By.CSS_SELECTOR, ".jp-Launcher .jp-LauncherCard")
TIMEOUT = 180.0
POLL = 0.05  # each look is a WebDriver round trip on the same 2 cores: not more often


def browser(job: dict[str, Any]) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = job["chromium"]
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,800", f"--user-data-dir={job['profile']}",
                 # The certificate is the daemon's own CA's: trusted by its key, as a user's
                 # browser trusts it once imported. Not --ignore-certificate-errors, which would
                 # also keep Chrome from caching anything.
                 f"--ignore-certificate-errors-spki-list={','.join(job['spki'])}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(job["chromedriver"]))
    driver.set_page_load_timeout(TIMEOUT)
    return driver


def interface_bytes(name: str) -> tuple[int, int]:
    folder = Path("/sys/class/net") / name / "statistics"
    return int((folder / "rx_bytes").read_text()), int((folder / "tx_bytes").read_text())


def visit(driver: webdriver.Chrome, job: dict[str, Any], screenshot: Path) -> dict[str, Any]:
    driver.get(f"{job['url']}/login")
    field = WebDriverWait(driver, TIMEOUT).until(
        expected_conditions.presence_of_element_located((By.NAME, "password")))
    driver.get_log("performance")  # what the login page itself loaded is not counted
    field.send_keys(job["password"])
    rx, tx = interface_bytes(job["interface"])
    cpu = browser_cpu()
    began = time.monotonic()
    driver.find_element(By.ID, "login_submit").click()
    WebDriverWait(driver, TIMEOUT, poll_frequency=POLL).until(
        expected_conditions.visibility_of_element_located(LAUNCHER))
    seconds = time.monotonic() - began
    cpu = browser_cpu() - cpu
    rx_after, tx_after = interface_bytes(job["interface"])
    driver.save_screenshot(str(screenshot))
    return {"seconds": seconds, "browser_cpu_s": cpu,
            "down_wire_bytes": rx_after - rx, "up_wire_bytes": tx_after - tx,
            **network_figures(driver.get_log("performance"))}


def browser_cpu() -> float:
    """CPU seconds used so far by chromedriver, Chromium and all Chromium's processes."""
    total = 0.0
    for process in psutil.Process().children(recursive=True):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def network_figures(entries: list[dict[str, Any]]) -> dict[str, Any]:
    encoded = 0
    responses = cached = gzipped = 0
    sizes: dict[str, int] = {}
    described: dict[str, str] = {}
    for entry in entries:
        message = json.loads(entry["message"])["message"]
        method, params = message["method"], message.get("params", {})
        if method == "Network.loadingFinished":
            size = int(params.get("encodedDataLength", 0))
            encoded += size
            sizes[params["requestId"]] = size
        elif method == "Network.responseReceived":
            response = params["response"]
            responses += 1
            from_cache = bool(response.get("fromDiskCache") or response.get("fromPrefetchCache"))
            cached += from_cache
            headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
            encoding = headers.get("content-encoding", "")
            gzipped += encoding in ("gzip", "br")
            path = "/" + response["url"].split("/", 3)[-1].split("?")[0]
            described[params["requestId"]] = (f"{path} {response.get('status')} {encoding or '-'}"
                                              f"{' cache' if from_cache else ''}")
    largest = sorted(((size, described.get(key, key)) for key, size in sizes.items()), reverse=True)
    return {"bytes": encoded, "responses": responses, "from_cache": cached, "compressed": gzipped,
            "largest": [f"{size} {what}" for size, what in largest[:15]]}


def main() -> int:
    job = json.loads(sys.stdin.read())
    results: dict[str, Any] = {}
    for name in ("cold", "warm"):
        driver = browser(job)
        try:
            results[name] = visit(driver, job, Path(job["screenshots"]) / f"{job['label']}-{name}.png")
            driver.delete_all_cookies()  # logged out; the cache stays
        finally:
            driver.quit()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
