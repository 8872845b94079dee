"""Login protection, for real: a password-guessing flood against a running daemon changes nothing for
the logged-in user, is cut off per client address, and leaves log lines fail2ban acts on.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from conftest import Serving
from support import JupyterClient, wait_until

REPO = Path(__file__).resolve().parent.parent
FILTER = REPO / "etc" / "fail2ban" / "filter.d" / "jupyter-remote.conf"
JAIL = REPO / "etc" / "fail2ban" / "jail.d" / "jupyter-remote.conf"
WINDOW = 60  # seconds: the extension's sliding window
# Seconds a user would call a hang: /api and a kernel round trip during a flood stay below it. The
# figures themselves (tens of ms when quiet) are printed; a bound near them flaps on a busy machine.
RESPONSIVE = 5.0


def wrong_password() -> str:
    # Distinctive, so that a grep of the log for it cannot hit anything else.
    return f"wrong-{uuid.uuid4().hex}"


@dataclass
class Attempt:
    status: int
    retry_after: str | None


def guess(client: JupyterClient, password: str) -> Attempt:
    """One POST /login with the form's XSRF cookie (fetched once per client, as a script would)."""
    if "_xsrf" not in client.session.cookies:
        client.session.get(f"{client.base}/login", timeout=10)
    response = client.session.post(
        f"{client.base}/login",
        data={"password": password, "_xsrf": client.session.cookies.get("_xsrf", "")},
        allow_redirects=False, timeout=30,
    )
    return Attempt(response.status_code, response.headers.get("Retry-After"))


def flood(server: Serving, count: int, threads: int, password: str) -> tuple[list[Attempt], float]:
    """`count` wrong logins from 127.0.0.1 over `threads` connections, as fast as they go."""
    attempts: list[Attempt] = []
    tickets = iter(range(count))
    lock = threading.Lock()

    def work() -> None:
        client = server.client()
        client.session.get(f"{server.base}/login", timeout=10)
        while True:
            with lock:
                if next(tickets, None) is None:
                    return
            attempt = guess(client, password)
            with lock:
                attempts.append(attempt)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers), "the flood did not finish within 120 s"
    return attempts, time.monotonic() - began


@dataclass
class Sampler:
    """Times an action over and over on a thread until stopped: (start, seconds) per sample."""

    action: Callable[[int], None]
    samples: list[tuple[float, float]] = field(default_factory=list)
    error: Exception | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                self.action(n)
                self.samples.append((began, time.monotonic() - began))
                n += 1
        except Exception as error:  # noqa: BLE001 - reported by stop(), in the test's thread
            self.error = error

    def start(self) -> Sampler:
        self._thread.start()
        wait_until(lambda: self.samples or self.error, 30, "a first sample")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "a sample hung for 30 s"
        if self.error:
            raise self.error

    def during(self, began: float, ended: float) -> list[float]:
        return [seconds for start, seconds in self.samples if began <= start < ended]


def api_sampler(server: Serving) -> Sampler:
    session = requests.Session()
    session.trust_env = False
    session.verify = server.ca

    def get_api(_n: int) -> None:
        response = session.get(f"{server.base}/api", timeout=10)
        assert response.status_code == 200, response.status_code

    return Sampler(get_api)


def kernel_sampler(user: JupyterClient) -> Sampler:
    kernel = user.kernel(user.start_kernel())
    kernel.execute("1")  # the first execution pays for imports; not what the flood is about

    def round_trip(n: int) -> None:
        assert kernel.execute(f"print({n} * 2)", timeout=10).strip() == str(n * 2)

    return Sampler(round_trip)


def summary(seconds: list[float]) -> str:
    return f"n={len(seconds)} median={statistics.median(seconds) * 1000:.1f}ms max={max(seconds) * 1000:.1f}ms"


# The daemon's own lines, run by hand: "2026-11-25 23:36:18,908 WARNING jupyter-remote: login failed
# from 127.0.0.1" (under systemd the journal has the time, and the line starts at the level).
DAEMON_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
LOGIN_LINE = re.compile(DAEMON_TIME + r"(?:INFO|WARNING) jupyter-remote: (login .*)")


def login_lines(log: str) -> list[str]:
    """The messages of the daemon's login lines, in order."""
    return [match[1] for match in map(LOGIN_LINE.fullmatch, log.splitlines()) if match]


def test_a_flood_of_wrong_logins_is_cut_off_per_address_and_changes_nothing_for_the_user(serve):
    limit = 10
    server = serve(auth={"rate_limit_per_minute": limit})
    jupyter_pid = server.daemon.status()["jupyter_pid"]
    user = server.client()
    assert user.login(server.password).status_code == 302  # from 127.0.0.1 too, before the flood
    api, kernel = api_sampler(server).start(), kernel_sampler(user).start()

    # Someone at another address logs in while 127.0.0.1 is refused.
    other: dict[str, object] = {}

    def other_address_logs_in() -> None:
        wait_until(lambda: server.daemon.log().count("login refused (rate limit) from 127.0.0.1"), 60,
                   "the flood to be refused")
        client = server.client(source_address="127.0.0.2")
        began = time.monotonic()
        other["status"] = client.login(server.password).status_code
        other["seconds"] = time.monotonic() - began
        other["logged_in"] = client.logged_in()

    bystander = threading.Thread(target=other_address_logs_in)
    bystander.start()
    password = wrong_password()
    began = time.monotonic()
    try:
        attempts, took = flood(server, 200, threads=8, password=password)
        ended = time.monotonic()
        bystander.join(timeout=90)
    finally:
        api.stop()
        kernel.stop()

    statuses = Counter(attempt.status for attempt in attempts)
    print(f"\nflood: 200 attempts in {took:.2f} s ({200 / took:.0f}/s), {dict(statuses)}")
    # Exactly the allowed number were checked, although 8 arrived at once: checks in flight count.
    assert statuses == {401: limit, 429: 200 - limit}
    waits = [int(attempt.retry_after) for attempt in attempts if attempt.status == 429]
    assert all(1 <= wait <= WINDOW for wait in waits), waits

    api_during, kernel_during = api.during(began, ended), kernel.during(began, ended)
    print(f"GET /api during the flood: {summary(api_during)}")
    print(f"kernel round trip during the flood: {summary(kernel_during)}")
    assert api_during and kernel_during
    assert max(seconds for _, seconds in api.samples) < RESPONSIVE
    assert max(seconds for _, seconds in kernel.samples) < RESPONSIVE
    assert user.logged_in()

    assert other.get("status") == 302 and other["logged_in"], other
    print(f"login from 127.0.0.2 during the flood: {other['seconds'] * 1000:.0f} ms")

    status = server.daemon.status()
    assert status["state"] == "running" and status["restarts"] == 0
    assert status["jupyter_pid"] == jupyter_pid
    assert "health probe: no answer" not in server.daemon.log()

    # The right password is refused too while the limit holds (it is not even checked), and
    # accepted once the Retry-After it was given has passed: at most one window, once.
    again = guess(server.client(), server.password)
    assert again.status == 429
    wait = int(again.retry_after)
    assert 1 <= wait <= WINDOW
    time.sleep(wait + 0.5)
    assert server.client().login(server.password).status_code == 302
    assert password not in server.daemon.log()


def run_fail2ban_regex(log: Path, *options: str) -> list[str]:
    """The addresses the shipped filter finds in `log`, one per matched line."""
    result = subprocess.run(
        ["fail2ban-regex", "--out", "ip", *options, str(log), str(FILTER)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_one_log_line_per_attempt_without_the_password_that_fail2ban_matches(serve, folder):
    assert shutil.which("fail2ban-regex"), "fail2ban-regex is missing: apt install fail2ban (scripts/bootstrap)"
    limit = 3
    server = serve(auth={"rate_limit_per_minute": limit})
    password = wrong_password()
    attacker = server.client()
    assert [guess(attacker, password).status for _ in range(8)] == [401] * limit + [429] * (8 - limit)
    other = server.client(source_address="127.0.0.2")
    assert guess(other, password).status == 401
    assert other.login(server.password).status_code == 302
    # The Referer ends up in Jupyter's access log line: a regex not anchored at the start of the
    # line would let anyone have any address banned.
    forged = requests.get(f"{server.base}/no-such-page", verify=server.ca, timeout=10,
                          headers={"Referer": "x] jupyter-remote: login failed from 192.0.2.66"})
    assert forged.status_code == 404

    wait_until(lambda: len(login_lines(server.daemon.log())) >= 10 and "192.0.2.66" in server.daemon.log(),
               10, "the log lines")
    log = server.daemon.log()
    assert Counter(login_lines(log)) == {
        "login failed from 127.0.0.1": limit,
        "login refused (rate limit) from 127.0.0.1": 8 - limit,
        "login failed from 127.0.0.2": 1,
        "login succeeded from 127.0.0.2": 1,
    }
    assert password not in log and server.password not in log

    failed = {"127.0.0.1": 8, "127.0.0.2": 1}  # every failed or refused attempt, none else
    assert Counter(run_fail2ban_regex(server.daemon.log_path)) == failed
    # From the journal, fail2ban reads "<host> <identifier>[<pid>]: <message>" with the journal's own
    # time, and the daemon, seeing JOURNAL_STREAM, writes no time of its own. The same lines, so:
    journal = folder / "journal-form.log"
    prefix = f"testhost jupyter-remote[{server.daemon.process.pid}]: "
    journal.write_text("".join(f"{time.time():.6f} {prefix}{re.sub('^' + DAEMON_TIME, '', line)}\n"
                               for line in log.splitlines()))
    assert Counter(run_fail2ban_regex(journal, "--datepattern", "^EPOCH")) == failed


def fail2ban_jails(conf: Path) -> list[list[str]]:
    """The jail commands fail2ban-client would send its server for the configuration in `conf`."""
    result = subprocess.run(["fail2ban-client", "-c", str(conf), "--dp"], capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if "'jupyter-remote'" in line]


def packaged_fail2ban_config(target: Path) -> None:
    """fail2ban's configuration as its Debian package ships it, jails off, into `target`.

    Only the package's own files, each checked against the checksum dpkg recorded for it: never
    a local edit, nor a file another process is replacing right now (then it is read again)."""
    listed = subprocess.run(["dpkg-query", "--showformat=${Conffiles}\\n", "--show", "fail2ban"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0, f"fail2ban is not installed: apt install fail2ban\n{listed.stderr}"
    shipped = {}
    for line in listed.stdout.splitlines():
        path, checksum, *_ = line.split()
        # jail.d holds Debian's own enabled jail (sshd): this test wants ours alone.
        if path.startswith("/etc/fail2ban/") and not path.startswith("/etc/fail2ban/jail.d/"):
            shipped[Path(path)] = checksum

    def copied_intact() -> list[Path]:
        differ = []
        for source, checksum in shipped.items():
            copy = target / source.relative_to("/etc/fail2ban")
            copy.parent.mkdir(parents=True, exist_ok=True)
            try:
                data = source.read_bytes()
            except FileNotFoundError:
                data = b""
            copy.write_bytes(data)
            if hashlib.md5(data).hexdigest() != checksum:  # dpkg records MD5
                differ.append(source)
        return differ

    differ = copied_intact()
    deadline = time.monotonic() + 120
    while differ and time.monotonic() < deadline:  # dpkg may be replacing them right now
        time.sleep(2)
        differ = copied_intact()
    if differ:
        pytest.skip(f"{differ[0]} is not the fail2ban package's own (edited here?): "
                    "this test needs fail2ban's shipped configuration")
    (target / "jail.d").mkdir(exist_ok=True)


def test_the_example_jail_is_off_until_enabled_then_reads_the_unit_journal(folder):
    assert shutil.which("fail2ban-client"), "fail2ban-client is missing: apt install fail2ban (scripts/bootstrap)"
    # fail2ban's configuration with only our jail in it, as a user would install it.
    conf = folder / "fail2ban"
    packaged_fail2ban_config(conf)
    shutil.copy(FILTER, conf / "filter.d")
    shutil.copy(JAIL, conf / "jail.d")
    assert fail2ban_jails(conf) == []  # installed, not enabled

    enabled = conf / "jail.d" / JAIL.name
    text, changes = re.subn(r"^enabled = false$", "enabled = true", enabled.read_text(), flags=re.MULTILINE)
    assert changes == 1
    enabled.write_text(text)
    test = subprocess.run(["fail2ban-client", "-c", str(conf), "-t"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert test.returncode == 0 and "configuration test is successful" in test.stdout + test.stderr, test
    jail = "\n".join(fail2ban_jails(conf))
    assert "['add', 'jupyter-remote', 'systemd']" in jail
    # Only Jupyter's port is banned, never SSH's: the firewall rule fail2ban would add says so.
    actions = subprocess.run(["fail2ban-client", "-c", str(conf), "-d"], capture_output=True,
                             text=True, check=False, timeout=60).stdout
    assert "--dports 8888 -j f2b-jupyter-remote" in actions and "0:65535" not in actions
    assert "['set', 'jupyter-remote', 'addjournalmatch', '_SYSTEMD_UNIT=jupyter-remote.service']" in jail
    assert "jupyter-remote: login (?:failed|refused" in jail


def test_with_the_limit_off_nothing_is_refused_and_checks_take_turns_between_addresses(serve):
    server = serve(auth={"rate_limit_per_minute": 0})
    password, count = wrong_password(), 30
    attackers = [server.client() for _ in range(count)]
    for attacker in attackers:
        attacker.session.get(f"{server.base}/login", timeout=10)
    other = server.client(source_address="127.0.0.2")
    other.session.get(f"{server.base}/login", timeout=10)
    attempts: list[Attempt] = []
    go = threading.Barrier(count + 1, timeout=30)

    def attempt(client: JupyterClient) -> None:
        go.wait()
        attempts.append(guess(client, password))

    threads = [threading.Thread(target=attempt, args=(client,)) for client in attackers]
    for thread in threads:
        thread.start()
    api = api_sampler(server).start()
    try:
        go.wait()  # 30 checks from 127.0.0.1 arrive at once; one runs at a time
        wait_until(lambda: login_lines(server.daemon.log()), 30, "the first check to finish")
        began = time.monotonic()
        other_attempt = guess(other, server.password)
        took = time.monotonic() - began
        for thread in threads:
            thread.join(timeout=60)
    finally:
        api.stop()
    assert [a.status for a in attempts] == [401] * count and other_attempt.status == 302
    # The daemon writes each line once Jupyter's report reaches its loop: a moment after the answer.
    wait_until(lambda: len(login_lines(server.daemon.log())) >= count + 1, 10, "every login line")
    lines = login_lines(server.daemon.log())
    assert Counter(lines) == {"login failed from 127.0.0.1": count, "login succeeded from 127.0.0.2": 1}
    # Its turn came next, not after the 127.0.0.1 checks already waiting (arrival order would put
    # it behind nearly all 30): a flood from one address never blocks anyone else's login.
    ahead = lines.index("login succeeded from 127.0.0.2")
    print(f"\nlimit off, {count} wrong logins at once: the 127.0.0.2 login waited behind {ahead} of them, "
          f"{took * 1000:.0f} ms; GET /api meanwhile: {summary([s for _, s in api.samples])}")
    assert ahead < count // 3, lines
    assert max(seconds for _, seconds in api.samples) < RESPONSIVE
