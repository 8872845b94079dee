"""`jupyter-remote run`: one loop that supervises Jupyter and speaks systemd's notify protocol.

Signal handlers only queue the signal and wake the loop; the loop handles signals, reaps children,
reads health probes and runs timers, all on `time.monotonic()` (as gunicorn's arbiter does).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

from supervisor import child, passwords, prepare, settings as settings_module, status
from supervisor.errors import JupyterRemoteError, SettingsError, exit_code
from supervisor.health import Answer, ProbeRunner, Target, local_address
from supervisor.notify import Notifier
from supervisor.render import serving_url
from supervisor.settings import Settings
from supervisor.states import Backoff, HealthTracker, State, Verdict, check_transition

log = logging.getLogger(__name__)

READINESS_POLL = 0.05  # seconds between probes while Jupyter starts: READY=1 follows within ~50 ms
EXTEND_EVERY, EXTEND_BY = 5.0, 20.0  # EXTEND_TIMEOUT_USEC while a start goes on
# A new certificate reaches Jupyter within about a second (the extension looks every second);
# until then it rightly serves the one before. Past this, serving an old one is a fault.
CERTIFICATE_SWAP_GRACE = 30.0
CERTIFICATE_CHECK = 3600.0  # renewal is due by days; an hourly look is plenty
FILES_CHECK = 5.0  # certbot's files are looked at this often in files mode
# Passed to pip in kernel-package installs: an operator's mirror or proxy (systemctl edit).
PIP_VARIABLES = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX",
                 "PIP_TRUSTED_HOST", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "no_proxy")
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)
# `jupyter-remote password` asks for the new password alone with this signal: SIGHUP would also
# apply any half-finished edit of the settings and perhaps restart Jupyter.
PASSWORD_SIGNAL = signal.SIGUSR1


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.place = prepare.layout(settings)
        self.notifier = Notifier()
        self.state = State.STOPPED
        self.jupyter: child.Jupyter | None = None
        self.backoff = Backoff()
        self.health = HealthTracker()
        self.timers: dict[str, float] = {}
        self.signals: deque[int] = deque()
        self.wake_read, self.wake_write = os.pipe()
        for fd in (self.wake_read, self.wake_write):
            os.set_blocking(fd, False)
        self.probes = ProbeRunner(self._wake)
        self.probe_cpu: float | None = None
        self.hashed = ""
        self.certificate: dict[str, object] | None = None
        self.certificate_changed = 0.0  # time.monotonic() of the last change of the live certificate
        self.files_stamp: tuple[object, ...] | None = None
        self.started = datetime.now(timezone.utc)
        self.serving_since = 0.0
        self.restarts = 0
        self.last_error = ""
        self.reload_pending = False
        self.reload_restarting = False
        self.reloads = {"seq": 0, "result": "", "errors": []}
        self.exit_code = 0
        self.kernel_env: Path | None = None
        self.kernel_job: subprocess.Popen[bytes] | None = None
        self.kernel_job_again = False
        self.restart_pending = ""

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signal_handlers()
        child.become_subreaper()
        # With a certificate already live, Jupyter starts with it at once, and a renewal that is
        # due follows within a second through the extension's swap: no start waits for it.
        live = self.place.store.meta() if self.settings.tls_enabled else None
        self._prepare(self.settings, certificate=live)
        self._pending_marker.unlink(missing_ok=True)  # we are the restart it asked for
        self._start_kernel_job()  # pip may take minutes: Jupyter starts meanwhile
        self._start_jupyter()
        if live:
            self._check_certificate()
        if self.notifier.watchdog_interval:
            self.timers["watchdog"] = time.monotonic()
        while self.state is not State.STOPPED:
            self._wait()
            self._reap()
            while self.signals:
                self._handle_signal(self.signals.popleft())
            self._read_probe()
            self._run_timers()
        child.kill_everything()  # e.g. a kernel-package install, after a fatal start
        return self.exit_code

    def _install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)
        for number in HANDLED_SIGNALS:
            signal.signal(number, self._enqueue)

    def _enqueue(self, number: int, _frame: object) -> None:
        self.signals.append(number)

    def _wake(self) -> None:
        try:
            os.write(self.wake_write, b"\0")
        except BlockingIOError:
            pass  # the loop is already due to wake

    def _wait(self) -> None:
        if self.signals:
            return
        timeout = max(0.0, min(self.timers.values(), default=time.monotonic() + 60) - time.monotonic())
        try:
            select.select([self.wake_read], [], [], timeout)
        except InterruptedError:
            pass
        try:
            while os.read(self.wake_read, 4096):
                pass
        except BlockingIOError:
            pass

    def _run_timers(self) -> None:
        now = time.monotonic()
        for name, due in sorted(self.timers.items(), key=lambda item: item[1]):
            if due <= now and self.timers.get(name) == due:
                del self.timers[name]
                getattr(self, f"_on_{name}")()

    def _set_state(self, new: State, text: str = "") -> None:
        check_transition(self.state, new)
        log.debug("state %s -> %s", self.state.name, new.name)
        self.state = new
        if text:
            self.notifier.status(text)
        self._write_status()

    # --- preparing and starting ------------------------------------------------------------------

    def _prepare(self, settings: Settings, certificate: dict[str, object] | None = None) -> None:
        """Password, certificate (unless the live one is given) and rendered config for `settings`;
        raises without changing ours."""
        place = prepare.layout(settings)
        prepare.make_directories(place)
        hashed = prepare.ensure_password(settings)
        certificate = certificate or prepare.ensure_certificate(place)
        kernel_env = prepare.ensure_kernel(place)
        prepare.write_jupyter_config(place, hashed)
        self.settings, self.place, self.hashed, self.kernel_env = settings, place, hashed, kernel_env
        self._note_certificate(certificate)

    def _note_certificate(self, outcome: dict[str, object] | None) -> None:
        if outcome is None:
            self.certificate = None
            return
        if not self.certificate or self.certificate["sha256"] != outcome["sha256"]:
            self.certificate_changed = time.monotonic()
        self.certificate = outcome
        if self.settings.tls.mode == "files":
            self.timers["files"] = time.monotonic() + FILES_CHECK
        self.timers["certificate"] = time.monotonic() + CERTIFICATE_CHECK

    def _start_jupyter(self) -> None:
        if not self.place.root_dir.is_dir():
            self._back_off(f"cannot start: root_dir {self.place.root_dir} is missing "
                           f"and {self.place.account.name} cannot make it")
            return
        if child.port_in_use(self.settings):
            self._back_off(
                f"port {self.settings.server.port} on {self.settings.server.ip} is in use by another program"
            )
            return
        try:
            self.jupyter = child.spawn(self.settings, self.place.account, self.place.config_dir,
                                       self.place.root_dir, self.kernel_env)
        except JupyterRemoteError as error:
            self.last_error = str(error)
            log.error("%s", error)
            self._set_state(State.FATAL, f"Failed: {error}")
            self.exit_code = 1
            self._set_state(State.STOPPED)
            return
        now = time.monotonic()
        self.health = HealthTracker()
        self.timers.update(start_deadline=now + self.settings.supervise.start_timeout, probe=now + READINESS_POLL)
        if "extend" not in self.timers:
            self._on_extend()
        self._set_state(State.STARTING, "Starting Jupyter")

    def _on_extend(self) -> None:
        if self.state in (State.STARTING, State.STOPPED):
            self.notifier.extend_timeout(EXTEND_BY)
            self.timers["extend"] = time.monotonic() + EXTEND_EVERY

    def _on_start_deadline(self) -> None:
        if self.state is State.STARTING:
            self._replace_jupyter(f"did not answer within start_timeout ({self.settings.supervise.start_timeout:g} s)")

    def _on_backoff(self) -> None:
        if self.state is State.BACKOFF:
            self.restarts += 1
            self._start_jupyter()

    def _back_off(self, reason: str) -> None:
        delay = self.backoff.next_delay()
        self.last_error = reason
        log.error("Jupyter %s; starting it again in %g s", reason, delay)
        self.timers["backoff"] = time.monotonic() + delay
        for name in ("probe", "start_deadline"):
            self.timers.pop(name, None)
        self._set_state(State.BACKOFF, f"Jupyter {reason}; restarting in {delay:g} s")
        if self.reload_pending:  # the start it waited for is over, if not as hoped
            self.reload_pending = False
            self._reload()

    def _replace_jupyter(self, reason: str) -> None:
        """A hung or failed Jupyter: kill it and everything it started, then back off."""
        self.probes.forget()
        child.kill_everything(spare=self._kernel_job_pid)
        self.jupyter = None
        self._back_off(reason)

    # --- health -----------------------------------------------------------------------------------

    def _target(self) -> Target:
        server = self.settings.server
        return Target(local_address(server.ip), server.port, f"{server.base_url}api", self.settings.tls_enabled)

    def _serves(self, answer: Answer) -> bool:
        """/api answers, over TLS with exactly the live certificate; once running, also with an
        older one while a renewal is being swapped in."""
        if answer.status != 200:
            return False
        if answer.fingerprint is None or not self.certificate or answer.fingerprint == self.certificate["sha256"]:
            return True
        swapping = time.monotonic() - self.certificate_changed < CERTIFICATE_SWAP_GRACE
        return self.state is State.RUNNING and swapping

    def _probe_timeout(self) -> float:
        return min(max(self.settings.supervise.health_interval, 2.0), 10.0)

    def _on_probe(self) -> None:
        if self.jupyter is None or self.probes.busy:
            return
        self._refresh_live_certificate()
        self._notice_upgrade()
        self.probe_cpu = self.jupyter.cpu_seconds()
        timeout = READINESS_POLL * 20 if self.state is State.STARTING else self._probe_timeout()
        self.probes.start(self._target(), timeout)

    def _read_probe(self) -> None:
        answer = self.probes.take()
        if answer is None or self.jupyter is None:
            return
        serves = self._serves(answer)
        if self.state is State.STARTING:
            if serves:
                self._serving()
            else:
                self.timers["probe"] = time.monotonic() + READINESS_POLL
            return
        if self.state is not State.RUNNING:
            return
        cpu = self.jupyter.cpu_seconds()
        advanced = cpu is not None and self.probe_cpu is not None and cpu - self.probe_cpu >= 0.05
        verdict = self.health.record(serves, cpu_advanced=advanced, stopped=self.jupyter.is_stopped())
        self.timers["probe"] = time.monotonic() + self.settings.supervise.health_interval
        if verdict is Verdict.HEALTHY:
            self.backoff.note_running(time.monotonic() - self.serving_since)
        elif verdict is Verdict.HUNG:
            self._replace_jupyter(f"stopped answering ({self._describe(answer)})")
        else:
            log.warning("health probe: %s; Jupyter is %s", self._describe(answer), verdict.value)

    def _describe(self, answer: Answer) -> str:
        if answer.status == 200 and answer.fingerprint:
            return f"serves certificate {answer.fingerprint[:16]}, not the live one"
        return answer.detail

    def _serving(self) -> None:
        self.timers.pop("start_deadline", None)
        self.serving_since = time.monotonic()
        self.last_error = ""
        self.timers["probe"] = self.serving_since + self.settings.supervise.health_interval
        self._set_state(State.RUNNING)
        log.info("serving %s", self.url)
        # READY=1 travels alone: a STATUS= in the same datagram could not lose it.
        self.notifier.ready(f"Serving {self.url}")
        if self.reload_restarting:
            self.reload_restarting = False
            self._finish_reload("applied")
        if self.reload_pending:
            self.reload_pending = False
            self._reload()

    @property
    def url(self) -> str:
        return serving_url(self.settings)

    # --- children and signals ---------------------------------------------------------------------

    def _reap(self) -> None:
        for pid, wait_status in child.reap_all():
            if self.jupyter is not None and pid == self.jupyter.pid:
                self.jupyter.process.returncode = os.waitstatus_to_exitcode(wait_status)
                self._jupyter_exited(child.describe_exit(wait_status))
            elif self.kernel_job is not None and pid == self.kernel_job.pid:
                self.kernel_job.returncode = os.waitstatus_to_exitcode(wait_status)
                self._kernel_job_done(wait_status)

    def _jupyter_exited(self, how: str) -> None:
        self.jupyter = None
        self.probes.forget()
        if self.state not in (State.STARTING, State.RUNNING):
            log.info("Jupyter %s", how)  # asked to stop
            return
        # Kernels in sessions of their own outlive Jupyter otherwise.
        child.kill_everything(spare=self._kernel_job_pid)
        self._back_off(how)

    def _handle_signal(self, number: int) -> None:
        if number in (signal.SIGTERM, signal.SIGINT):
            self._stop()
        elif number == signal.SIGHUP:
            if self.state is State.STARTING:
                self.reload_pending = True  # applied once the start is done
                log.info("reload asked for during start-up: it follows once Jupyter serves")
            else:
                self._reload()
        elif number == PASSWORD_SIGNAL:
            self._apply_password()

    def _stop(self) -> None:
        if self.state in (State.STOPPING, State.STOPPED):
            return
        log.info("stopping")
        self.notifier.stopping()
        self._set_state(State.STOPPING)
        self._terminate_jupyter()
        self.timers.clear()
        self._set_state(State.STOPPED)

    def _terminate_jupyter(self, spare: int | None = None) -> None:
        """SIGTERM (Jupyter shuts its kernels down), then SIGKILL for all that is left at the deadline
        (but `spare`, a kernel-package install, when Jupyter only restarts)."""
        self.probes.forget()
        if self.jupyter is not None:
            child.signal_tree([self.jupyter.pid], signal.SIGTERM)
            deadline = time.monotonic() + self.settings.supervise.stop_timeout
            while self.jupyter is not None and time.monotonic() < deadline:
                self._reap()
                # stop_timeout may exceed WatchdogSec=: a slow stop must not look like a hang.
                if time.monotonic() >= self.timers.get("watchdog", float("inf")):
                    self._on_watchdog()
                time.sleep(0.05)
            if self.jupyter is not None:
                log.warning("Jupyter did not stop within stop_timeout; killing it and its processes")
        child.kill_everything(spare=spare)
        self.jupyter = None

    # --- reload and live changes ------------------------------------------------------------------

    def _reload(self) -> None:
        self.notifier.reloading()
        old = self.settings
        try:
            new = settings_module.load_isolated(old.source)
            restart = new.server != old.server or new.paths != old.paths
            self._prepare(new)
        except (SettingsError, JupyterRemoteError) as error:
            for line in error.lines:
                log.error("reload rejected: %s", line)
            log.error("reload rejected: still serving with the settings loaded before")
            self._finish_reload("rejected", error.lines)
            return
        except OSError as error:
            self._finish_reload("rejected", [f"cannot apply the settings: {error}"])
            return
        self._start_kernel_job()
        if not restart:
            log.info("settings reloaded; password, TLS and kernel changes applied without a restart")
            self._finish_reload("applied")
            return
        log.warning("[server] settings changed: restarting Jupyter (running kernels stop)")
        self.reload_restarting = True
        if self.state in (State.RUNNING, State.STARTING):
            self._set_state(State.STOPPING, "Restarting Jupyter with new [server] settings")
            self._terminate_jupyter(spare=self._kernel_job_pid)
        self.timers.pop("backoff", None)
        self.backoff = Backoff()
        self._start_jupyter()
        if self.state is not State.STARTING:  # the new settings cannot serve yet (busy port)
            self.reload_restarting = False
            self._finish_reload("applied", [self.last_error])

    def _finish_reload(self, result: str, errors: list[str] | tuple[str, ...] = ()) -> None:
        self.reloads = {"seq": self.reloads["seq"] + 1, "result": result, "errors": list(errors)}
        if result == "rejected":
            self.last_error = "; ".join(errors)
        self._write_status()
        self.notifier.ready(f"Serving {self.url}" if self.state is State.RUNNING else f"Jupyter {self.state.value}")

    def _apply_password(self) -> None:
        try:
            hashed = passwords.read_hash(self.settings)
        except SettingsError as error:
            log.error("new password not applied: %s", error)
            return
        if not hashed or hashed == self.hashed:
            return
        prepare.write_jupyter_config(self.place, hashed)
        self.hashed = hashed
        log.info("new password applied without restarting Jupyter; earlier sessions are logged out")

    @property
    def _pending_marker(self) -> Path:
        # Written by the package's postinst on upgrade: a restart would stop every kernel, so it is
        # left to the operator, and said here and in `status`.
        return self.settings.runtime_dir / "restart-pending"

    def _notice_upgrade(self) -> None:
        if self.restart_pending:
            return
        try:
            version = self._pending_marker.read_text().strip()
        except OSError:
            return
        self.restart_pending = version or "a new version"
        log.warning("jupyter-remote was upgraded to %s: restart when convenient (systemctl restart "
                    "jupyter-remote; running kernels stop)", self.restart_pending)
        self._write_status()

    # --- the notebooks' Python --------------------------------------------------------------------

    @property
    def _kernel_job_pid(self) -> int | None:
        return self.kernel_job.pid if self.kernel_job else None

    def _start_kernel_job(self) -> None:
        """Refresh the notebooks' environment and install `kernel.packages`, as the account, in a
        child: the loop and the watchdog go on meanwhile; pip's lines go to the journal."""
        if self.kernel_env is None:
            return
        if self.kernel_job is not None:
            self.kernel_job_again = True  # once this one ends, with the settings of then
            return
        environment = child.account_environment(self.place.account)
        environment.update({k: os.environ[k] for k in PIP_VARIABLES if k in os.environ})
        argv = prepare.kernel_env_command(self.place, self.kernel_env, self.settings.kernel.packages)
        try:
            self.kernel_job = subprocess.Popen(argv, env=environment, cwd="/", stdin=subprocess.DEVNULL,
                                               process_group=0)
        except OSError as error:
            log.error("cannot set up the notebooks' Python: %s", error)

    def _kernel_job_done(self, wait_status: int) -> None:
        self.kernel_job = None
        if wait_status:
            self.last_error = f"kernel packages not installed ({child.describe_exit(wait_status)})"
            self._write_status()
        if self.kernel_job_again:
            self.kernel_job_again = False
            self._start_kernel_job()

    # --- certificates -----------------------------------------------------------------------------

    def _on_certificate(self) -> None:
        self._check_certificate()

    def _on_files(self) -> None:
        stamp = _stamp(self.settings.tls.cert_file, self.settings.tls.key_file)
        if stamp != self.files_stamp:
            if self._check_certificate():
                self.files_stamp = stamp
        self.timers["files"] = time.monotonic() + FILES_CHECK

    def _check_certificate(self, force: str = "") -> bool:
        try:
            self._note_certificate(prepare.ensure_certificate(self.place, force))
        except JupyterRemoteError as error:
            # certbot may have replaced one file of the pair and not yet the other: try again later.
            log.warning("certificate unchanged: %s", error)
            self.timers["certificate"] = time.monotonic() + CERTIFICATE_CHECK
            return False
        self._write_status()
        return True

    def _refresh_live_certificate(self) -> None:
        """Notice a certificate made by `jupyter-remote cert renew` in another process."""
        if self.certificate is None:
            return
        meta = self.place.store.meta()
        if meta and meta.get("sha256") != self.certificate.get("sha256"):
            self._note_certificate({**self.certificate, **meta})
            self._write_status()

    def _on_watchdog(self) -> None:
        self.notifier.watchdog()
        assert self.notifier.watchdog_interval
        self.timers["watchdog"] = time.monotonic() + self.notifier.watchdog_interval

    # --- status -----------------------------------------------------------------------------------

    def _write_status(self) -> None:
        data = {
            **status.own_identity(),
            "state": self.state.value,
            "jupyter_pid": self.jupyter.pid if self.jupyter else None,
            "url": self.url,
            "started": self.started.isoformat(timespec="seconds"),
            "restarts": self.restarts,
            "cert_days_left": _days_left(self.certificate),
            "last_error": self.last_error,
            "reload": self.reloads,
            "restart_pending": self.restart_pending,
        }
        try:
            status.write(self.settings.runtime_dir, data)
        except OSError as error:
            log.warning("cannot write the status file: %s", error)


def _days_left(certificate: dict[str, object] | None) -> int | None:
    if not certificate or not certificate.get("not_after"):
        return None
    not_after = datetime.fromisoformat(str(certificate["not_after"]))
    return (not_after - datetime.now(timezone.utc)).days


def _stamp(*paths: str) -> tuple[object, ...]:
    stamps: list[object] = []
    for path in paths:
        try:
            info = os.stat(path)
            stamps.append((info.st_ino, info.st_mtime_ns, info.st_size))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def run(settings_path: Path) -> int:
    return Daemon(settings_module.load_isolated(settings_path)).run()


def main(arguments: list[str]) -> int:
    """`jupyter-remote run` goes on here (exec'd), in an interpreter without the command-line parser."""
    # Under systemd the journal stamps each line; by hand, a time helps.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=f"{stamp}%(levelname)s %(message)s")
    try:
        return run(Path(arguments[0]))
    except JupyterRemoteError as error:
        for line in error.lines:
            print(line, file=sys.stderr)
        return exit_code(error)
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        print(f"jupyter-remote: {error.strerror or error}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
