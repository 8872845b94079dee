"""`jupyter-remote run`: one loop that supervises Jupyter through the lifecycle in states.py.

Signal handlers only queue (supervisor.loop); each turn of the loop collects exited children, then
handles queued signals, then the health probe's answer, then due timers, on `time.monotonic()`.
What to decide lives elsewhere, as pure functions: the backoff (states), the health verdict
(health), whether a reload restarts Jupyter (settings); this module wires decisions to effects.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from datetime import datetime, UTC
from pathlib import Path

from supervisor import child, health, idle, loading, login_events, passwords, status
from supervisor.errors import JupyterRemoteError, SettingsError, describe
from supervisor.isolated import Pending
from supervisor.health import Answer, HealthTracker, ProbeRunner, Target, Verdict, local_address
from supervisor.kernel_env import PackageJob
from supervisor.layout import layout_of, root_folder
from supervisor.loop import Clock, SignalQueue, Timers
from supervisor.notify import Notifier
from supervisor.prepare import Prepared, prepare, write_jupyter_config
from supervisor.render import activity_file, notice_file, serving_url
from supervisor.settings import Settings, challenge_socket_changes, needs_restart
from supervisor.states import Backoff, State, check_transition
from supervisor.tls.challenge_socket import bind_http_challenge_socket
from supervisor.tls.watch import CertificateWatcher, live_certificate

log = logging.getLogger(__name__)

READINESS_POLL = 0.05  # seconds between probes while Jupyter starts: READY=1 follows within ~50 ms
EXTEND_EVERY, EXTEND_BY = 5.0, 20.0  # EXTEND_TIMEOUT_USEC while a start goes on


class Daemon:
    def __init__(self, settings: Settings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.timers = Timers(clock)
        self.signals = SignalQueue()
        self.notifier = Notifier()
        self.probes = ProbeRunner(self.signals.wake)
        self.certificates = CertificateWatcher(self.timers, self._write_status, clock)
        self.packages = PackageJob()
        self.packages_due = False  # the notebooks' environment to refresh once Jupyter serves
        self.backoff = Backoff()
        self.health = HealthTracker()
        self.state = State.STOPPED
        self.prepared: Prepared | None = None
        self.jupyter: child.Jupyter | None = None
        self.probe_cpu: float | None = None
        self.started = datetime.now(UTC)
        self.serving_since = 0.0
        self.restarts = 0
        self.last_error = ""
        self.reload = status.ReloadResult()
        self.reload_after_start = False  # SIGHUP while Jupyter starts: applied once it serves
        self.restarting_for_reload = False  # its verdict is given once Jupyter serves again
        self.restart_pending: str | None = None
        self.exit_code = 0
        self.challenge_socket: socket.socket | None = None  # acme mode's HTTP-01 listener
        self.login_events: socket.socket | None = None  # Jupyter reports login attempts here
        self.identity = status.own_identity()
        self.idle = idle.IdleWatch(idle.ActivityClock(clock()))

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; 0 after a clean stop, 1 after a failure (the tree is stopped)."""
        self.signals.install()
        child.become_subreaper()
        try:
            self._start()
            while self.state is not State.STOPPED:
                self._turn()
        except JupyterRemoteError:
            raise  # the settings or what they name cannot serve: main() says why
        except Exception:
            # Fail closed: whatever went wrong, no kernel may outlive a daemon that lost track.
            log.exception("internal error; stopping Jupyter and everything it started")
            self.notifier.stopping()
            self.exit_code = 1
        finally:
            self._stop_everything()
        return self.exit_code

    def _turn(self) -> None:
        check, events = self.certificates.check, self.login_events
        watched = [check.fd] if check else []
        if events is not None:
            watched.append(events.fileno())
        readable = self.signals.wait(self.timers.next_timeout(), watched)
        self._reap()
        if check is not None and check.fd in readable:
            self.certificates.read()
        if events is not None and events.fileno() in readable:
            self._log_logins(events)
        while (number := self.signals.take()) is not None:
            self._on_signal(number)
        self._read_probe()
        self.timers.run_due()

    def _set_state(self, new: State, text: str = "") -> None:
        check_transition(self.state, new)
        log.debug("state %s -> %s", self.state.name, new.name)
        self.state = new
        if text:
            self.notifier.status(text)
        self._write_status()

    # --- starting -----------------------------------------------------------------------------

    def _start(self) -> None:
        # With a certificate already live, Jupyter starts with it at once, and a renewal that is
        # due follows within a second through the extension's swap: no start waits for it.
        store = layout_of(self.settings).store
        live = live_certificate(store) if self.settings.tls_enabled else None
        # acme mode: bound once as root (port 80 needs no privilege in Jupyter), then inherited.
        self.challenge_socket = bind_http_challenge_socket(self.settings)
        self._adopt(self.settings, prepare(self.settings, live, self._challenge_fd(),
                                           starting=True))
        status.clear_restart_pending(self.settings.runtime_dir)  # we are the restart it asked for
        if self.notifier.watchdog_interval:
            self._watchdog()
        self._start_jupyter()
        if live and self.settings.tls.mode != "acme":  # an order waits until Jupyter can answer
            self.certificates.start_check()

    def _challenge_fd(self) -> int | None:
        return self.challenge_socket.fileno() if self.challenge_socket else None

    def _adopt(self, settings: Settings, prepared: Prepared) -> None:
        path = prepared.layout.events_socket
        if self.login_events is None or self.login_events.getsockname() != str(path):
            if self.login_events is not None:
                self.login_events.close()
            self.login_events = login_events.open_socket(path, prepared.layout.account.gid)
        self.settings, self.prepared = settings, prepared
        self.certificates.watch(settings, prepared.layout.account, prepared.certificate)
        # pip may take minutes and competes with Jupyter's start for the CPU: once Jupyter serves.
        if self.state is State.RUNNING:
            self.packages.start(prepared.layout, prepared.kernel_env)
        else:
            self.packages_due = True
        self._configure_idle()

    def _start_jupyter(self) -> None:
        assert self.prepared is not None
        server = self.settings.server
        executable = child.jupyter_executable(self.settings)
        if not os.access(executable, os.X_OK):
            self.last_error = f"cannot run Jupyter: {executable} is not an executable file"
            log.error("%s", self.last_error)
            self._set_state(State.FATAL, f"Failed: {self.last_error}")
            self.exit_code = 1
            self._set_state(State.STOPPED)
            return
        if child.port_in_use(self.settings):
            self._back_off(f"port {server.port} on {server.ip} is in use by another program")
            return
        layout = self.prepared.layout
        try:
            self.jupyter = child.spawn_jupyter(
                self.settings, layout.account, layout.config_dir, self.prepared.kernel_env,
                pass_fds=() if self.challenge_socket is None else (self.challenge_socket.fileno(),),
                extra=self.prepared.jupyter_variables)
        except OSError as error:
            self._back_off(f"could not be started ({error.strerror or error})")
            return
        self.health = HealthTracker()
        self.timers.after("start deadline", self.settings.supervise.start_timeout,
                          self._start_timed_out)
        self.timers.after("probe", READINESS_POLL, self._probe)
        if not self.timers.pending("extend"):
            self._extend()
        self._set_state(State.STARTING, "Starting Jupyter")

    def _extend(self) -> None:
        if self.state in (State.STARTING, State.STOPPED):
            self.notifier.extend_timeout(EXTEND_BY)
            self.timers.after("extend", EXTEND_EVERY, self._extend)

    def _start_timed_out(self) -> None:
        timeout = self.settings.supervise.start_timeout
        self._replace_jupyter(f"did not answer within start_timeout ({timeout:g} s)")

    def _serving(self) -> None:
        self.timers.cancel("start deadline")
        self.serving_since = self.clock()
        self.last_error = ""
        if self.prepared is not None and self.prepared.setup_problem:  # mended meanwhile
            self.prepared = dataclasses.replace(self.prepared, setup_problem="")
        self.timers.after("probe", self.settings.supervise.health_interval, self._probe)
        self._set_state(State.RUNNING)
        log.info("serving %s", self.url)
        if self.packages_due and self.prepared is not None:
            self.packages_due = False
            self.packages.start(self.prepared.layout, self.prepared.kernel_env)
        # READY=1 travels alone: a STATUS= in the same datagram could not lose it.
        self.notifier.ready(f"Serving {self.url}")
        if self.settings.tls.mode == "acme":  # the extension answers challenges from now on
            self.certificates.start_check()
        if self.restarting_for_reload:
            self.restarting_for_reload = False
            self._finish_reload("applied")
        self._reload_if_asked_during_start()

    def _reload_if_asked_during_start(self) -> None:
        if self.reload_after_start:
            self.reload_after_start = False
            self._reload()

    @property
    def url(self) -> str:
        return serving_url(self.settings)

    # --- failing and backing off ------------------------------------------------------------

    def _served_for(self) -> float:
        return self.clock() - self.serving_since if self.state is State.RUNNING else 0.0

    def _back_off(self, reason: str, served_for: float = 0.0) -> None:
        delay = self.backoff.next_delay(served_for)
        problem = self.prepared.setup_problem if self.prepared else ""
        self.last_error = f"{reason} ({problem})" if problem else reason
        when = f"in {delay:g} s" if delay else "now (it had served for a while)"
        log.error("Jupyter %s; starting it again %s", reason, when)
        self.timers.cancel("probe", "start deadline")
        self.timers.after("backoff", delay, self._start_again)
        self._set_state(State.BACKOFF, f"Jupyter {reason}; restarting {when}")
        self._reload_if_asked_during_start()  # the start it waited for is over, if not as hoped

    def _start_again(self) -> None:
        if self.state is State.BACKOFF:
            self.restarts += 1
            self._start_jupyter()

    def _replace_jupyter(self, reason: str) -> None:
        """A hung or failed Jupyter: kill it and everything it started, then back off."""
        served_for = self._served_for()
        self.probes.forget()
        child.kill_everything(spare=self.packages.pid)
        self.jupyter = None
        self._back_off(reason, served_for)

    def _reap(self) -> None:
        for pid, wait_status in child.reap_all():
            if self.jupyter is not None and pid == self.jupyter.pid:
                self.jupyter.process.returncode = os.waitstatus_to_exitcode(wait_status)
                how = child.describe_exit(wait_status)
                if self.state is State.STARTING and child.port_in_use(self.settings):
                    # Taken between our look and Jupyter's bind: port_retries = 0 made it exit.
                    server = self.settings.server
                    how += f": port {server.port} on {server.ip} is in use by another program"
                self._jupyter_exited(how)
            elif pid == self.packages.pid:
                problem = self.packages.finished(wait_status)
                if problem:
                    self.last_error = problem
                    self._write_status()

    def _jupyter_exited(self, how: str) -> None:
        if self.state not in (State.STARTING, State.RUNNING):
            self.jupyter = None
            log.info("Jupyter %s", how)  # asked to stop
            return
        # Kernels in sessions of their own outlive Jupyter otherwise.
        self._replace_jupyter(how)

    # --- health -------------------------------------------------------------------------------

    def _probe(self) -> None:
        if self.jupyter is None or self.probes.busy:
            return
        assert self.prepared is not None
        self.certificates.notice_renewal_elsewhere(self.prepared.layout.store)
        self._notice_upgrade()
        if self.state is State.RUNNING and self.jupyter.is_stopped():
            # A stopped process answers nothing: no need to wait out a probe's timeout to know,
            # so a SIGSTOPped Jupyter is replaced within three health intervals.
            self._judge(Answer(None, "its process is stopped (SIGSTOP)"), serves=False)
            return
        self.probe_cpu = self.jupyter.cpu_seconds()
        server = self.settings.server
        target = Target(local_address(server.ip), server.port, f"{server.base_url}api",
                        self.settings.tls_enabled)
        starting = self.state is State.STARTING
        timeout = READINESS_POLL * 20 if starting else health.probe_timeout(
            self.settings.supervise.health_interval)
        self.probes.start(target, timeout)

    def _read_probe(self) -> None:
        answer = self.probes.take()
        if answer is None or self.jupyter is None:
            return
        live = self.certificates.live
        serves = health.serves(answer, live.sha256 if live else None,
                               running=self.state is State.RUNNING,
                               since_swap=self.certificates.since_change())
        if self.state is State.STARTING:
            if serves:
                self._serving()
            else:
                self.timers.after("probe", READINESS_POLL, self._probe)
        elif self.state is State.RUNNING:
            self._judge(answer, serves)

    def _judge(self, answer: Answer, serves: bool) -> None:
        assert self.jupyter is not None
        advanced = health.cpu_advanced(self.probe_cpu, self.jupyter.cpu_seconds())
        verdict = self.health.record(serves, cpu_advanced=advanced,
                                     stopped=self.jupyter.is_stopped())
        self.timers.after("probe", self.settings.supervise.health_interval, self._probe)
        if verdict is Verdict.HUNG:
            self._replace_jupyter(f"stopped answering ({health.describe(answer)})")
        elif verdict is not Verdict.HEALTHY:
            log.warning("health probe: %s; Jupyter is %s", health.describe(answer), verdict.value)

    def _log_logins(self, events: socket.socket) -> None:
        """The login lines fail2ban acts on: written by the daemon alone, for attempts Jupyter's
        own process reported (a notebook printing such a line only reaches the log prefixed)."""
        # Only the running Jupyter server may report; with none, every datagram is dropped.
        jupyter_pid = self.jupyter.pid if self.jupyter else None
        for event in login_events.receive(events, jupyter_pid):
            log.log(event.level, "%s", login_events.log_line(event))

    def _watchdog(self) -> None:
        self.notifier.watchdog()
        assert self.notifier.watchdog_interval
        self.timers.after("watchdog", self.notifier.watchdog_interval, self._watchdog)

    # --- signals: stop, reload, password ------------------------------------------------------

    def _on_signal(self, number: int) -> None:
        if number in (signal.SIGTERM, signal.SIGINT):
            self._stop()
        elif number == status.RELOAD_SIGNAL:
            if self.state is State.STARTING:
                self.reload_after_start = True
                log.info("reload asked for during start-up: it follows once Jupyter serves")
            else:
                self._reload()
        elif number == status.PASSWORD_SIGNAL:
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
        """SIGTERM (Jupyter shuts its kernels down), then SIGKILL for all that is left at the
        deadline (but `spare`, a kernel-package install, when Jupyter only restarts)."""
        self.probes.forget()
        if self.jupyter is not None:
            child.send_signal([self.jupyter.pid], signal.SIGTERM)
            deadline = self.clock() + self.settings.supervise.stop_timeout
            while self.jupyter is not None and self.clock() < deadline:
                self._reap()
                # stop_timeout may exceed WatchdogSec=: a slow stop must not look like a hang.
                due = self.timers.due("watchdog")
                if due is not None and self.clock() >= due:
                    self._watchdog()
                time.sleep(0.05)
            if self.jupyter is not None:
                log.warning("Jupyter did not stop within stop_timeout; killing all it started")
        child.kill_everything(spare=spare)
        self.jupyter = None

    def _stop_everything(self) -> None:
        """The last act of run(), however it ends: nothing of ours is left running or bound."""
        try:
            self._terminate_jupyter()
        finally:
            child.kill_everything()
            for bound in (self.challenge_socket, self.login_events):
                if bound is not None:
                    bound.close()
            if self.prepared is not None:
                self.prepared.layout.events_socket.unlink(missing_ok=True)

    def _reload(self) -> None:
        self.notifier.reloading()
        old, old_socket = self.settings, self.challenge_socket
        new_socket, moves = None, False
        try:
            new = loading.load_isolated(old.source)
            moves = challenge_socket_changes(old, new)
            if moves:
                new_socket = bind_http_challenge_socket(new)
            serving = new_socket if moves else old_socket
            prepared = prepare(new, acme_http_fd=serving.fileno() if serving else None)
        except (JupyterRemoteError, OSError) as error:
            if new_socket:
                new_socket.close()
            lines = error.lines if isinstance(error, JupyterRemoteError) else [
                f"cannot apply the settings: {error}"]
            for line in lines:
                log.error("reload rejected: %s", line)
            log.error("reload rejected: still serving with the settings loaded before")
            self._finish_reload("rejected", tuple(lines))
            return
        self._adopt(new, prepared)
        self.last_error = ""
        if not needs_restart(old, new):
            log.info("settings reloaded; password, TLS and kernel changes applied, no restart")
            self._finish_reload("applied")
            return
        log.warning("[server] or [dask] settings changed: restarting Jupyter "
                    "(running kernels stop)")
        if self.state in (State.RUNNING, State.STARTING):
            self._set_state(State.STOPPING, "Restarting Jupyter with new [server] settings")
            self._terminate_jupyter(spare=self.packages.pid)
        if moves:  # the next Jupyter inherits the new socket
            if old_socket:
                old_socket.close()
            self.challenge_socket = new_socket
        self.timers.cancel("backoff")
        self.backoff = Backoff()
        self._start_jupyter()
        if self.state is State.STARTING:
            self.restarting_for_reload = True
        else:  # the new settings cannot serve yet (a busy port): applied, and said why
            self._finish_reload("applied", (self.last_error,))

    def _finish_reload(self, result: str, errors: tuple[str, ...] = ()) -> None:
        self.reload = self.reload.next(result, errors)
        if result == "rejected":
            self.last_error = "; ".join(errors)
        self._write_status()
        running = self.state is State.RUNNING
        self.notifier.ready(f"Serving {self.url}" if running else f"Jupyter {self.state.value}")

    def _apply_password(self) -> None:
        """The password alone (`jupyter-remote password`): no other pending edit, no restart."""
        assert self.prepared is not None
        try:
            hashed = passwords.read_hash(self.settings)
            if not hashed or hashed == self.prepared.hashed_password:
                return
            write_jupyter_config(self.prepared.layout, hashed, self.prepared.acme_http_fd)
        except (SettingsError, OSError) as error:
            log.error("new password not applied: %s", error)
            return
        self.prepared = dataclasses.replace(self.prepared, hashed_password=hashed)
        log.info("new password applied without restarting Jupyter; earlier sessions are logged out")

    def _notice_upgrade(self) -> None:
        # The package's postinst leaves a marker on upgrade: a restart would stop every kernel, so
        # it is left to the operator, and said here and in `status`.
        if self.restart_pending:
            return
        self.restart_pending = status.restart_pending(self.settings.runtime_dir)
        if self.restart_pending:
            log.warning("jupyter-remote was upgraded to %s: restart when convenient (systemctl "
                        "restart jupyter-remote; running kernels stop)", self.restart_pending)
            self._write_status()

    # --- idle stop (decisions in supervisor.idle) ----------------------------------------------

    def _configure_idle(self) -> None:
        """At start and on every reload: a changed [idle] applies at once, without a restart."""
        assert self.prepared is not None
        account = self.prepared.layout.account
        recorded = activity_file(self.settings)
        # The extension, running as the account, records activity here; root only lstat()s it.
        root_folder(recorded.parent, 0o755, None if account.is_self else (account.uid, account.gid))
        if self.idle.configure(self.settings.idle, recorded, account.uid):
            log.info("idle warning withdrawn: [idle] changed")
        if not self.idle.warned:  # a warning due under a changed [idle] is given at the next look
            self._idle_notice({})
        if idle.enabled(self.settings.idle):
            self.timers.after("idle", 0, self._idle_look)
        else:
            self.timers.cancel("idle")

    def _idle_look(self) -> None:
        jupyter_pid = self.jupyter.pid if self.jupyter else None
        decision, called_off = self.idle.look(self.clock(), jupyter_pid)
        next_look = decision.next_look
        if called_off:
            log.info("idle stop called off: %s was active", self.idle.activity.what)
            self._idle_notice({})
            self.notifier.status(f"Serving {self.url}")
        if decision.step is idle.Step.WARN:
            self._warn_idle(decision.due)
        elif decision.step is idle.Step.ACT:
            busy = self._busy_with()
            if not busy:
                self._act_on_idle()
                next_look = idle.LONGEST_LOOK  # a poweroff that never came is asked for again
            else:
                log.info("idle stop postponed: %s is in progress", busy)
        self._write_status()
        if self.state is not State.STOPPED:
            self.timers.after("idle", next_look, self._idle_look)

    def _busy_with(self) -> str:
        """What the idle action must never interrupt."""
        if self.restarting_for_reload or self.reload_after_start:
            return "a reload"
        if self.certificates.check is not None:
            return "a certificate check"
        if self.packages.pid is not None:
            return "a kernel-package install"
        return ""

    def _warn_idle(self, due: float) -> None:
        settings = self.settings.idle
        at = idle.due_wall_time(due, self.clock(), time.time()).astimezone()
        text = idle.warning_text(settings.action, at)
        log.warning("idle: nothing active for %.0f s (the last activity: %s); [idle] action %s is "
                    "due at %s unless something is active", self.clock() - self.idle.activity.last,
                    self.idle.activity.what, settings.action, at.isoformat(timespec="seconds"))
        self.notifier.status(f"Serving {self.url}; idle: {settings.action} at "
                             f"{at.isoformat(timespec='seconds')} unless something is active")
        self._idle_notice({"message": text, "due": at.isoformat(timespec="seconds")})

    def _idle_notice(self, notice: dict[str, str]) -> None:
        """The warning for open JupyterLabs, which poll it through the extension."""
        if self.prepared is not None:
            mode, owner = self.prepared.layout.account_readable
            idle.write_notice(notice_file(self.settings), notice, mode, owner)

    def _act_on_idle(self) -> None:
        settings = self.settings.idle
        why = (f"nothing active for {settings.stop_after_minutes:g} minutes "
               f"([idle] stop_after_minutes; the last activity: {self.idle.activity.what})")
        if settings.action == "stop":
            log.warning("%s: stopping jupyter-remote, as [idle] action = \"stop\" says", why)
            self.notifier.status(f"Stopping: {why}")
            self._stop()
            return
        log.warning("%s: powering the machine off, as [idle] action = \"poweroff\" says", why)
        self.notifier.status(f"Powering off: {why}")
        idle.power_off()

    # --- status -------------------------------------------------------------------------------

    def _write_status(self) -> None:
        pid, created = self.identity
        current = status.DaemonStatus(
            state=self.state.value, pid=pid, pid_created=created,
            jupyter_pid=self.jupyter.pid if self.jupyter else None, url=self.url,
            started=self.started.isoformat(timespec="seconds"), restarts=self.restarts,
            cert_days_left=self.certificates.days_left(),
            last_error=self.last_error or self.certificates.problem,
            restart_pending=self.restart_pending, reload=self.reload,
            idle_seconds=self.idle.idle_seconds(self.clock()),
            idle_action_at=self.idle.action_at(self.clock(), time.time()),
        )
        try:
            status.write(self.settings.runtime_dir, current)
        except OSError as error:
            log.warning("cannot write the status file: %s", error)


def main(arguments: list[str], validating: Pending | None = None) -> int:
    """`jupyter-remote run` goes on here, in an interpreter without the command-line parser;
    `validating`: the settings' validation, begun before this module was imported."""
    # Under systemd the journal stamps each line; by hand, a time helps.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"{stamp}%(levelname)s %(message)s")
    try:
        return Daemon(loading.load_isolated(Path(arguments[0]), validating)).run()
    except Exception as error:
        lines, code = describe(error)
        for line in lines:
            print(line, file=sys.stderr)
        return code
