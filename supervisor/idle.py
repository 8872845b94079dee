"""Idle stop: an activity clock, the decision what to do about a machine nobody uses, and the cheap
looks at the machine that feed the clock.

The decision is a pure function of (last activity, the [idle] settings, now) on the daemon's
monotonic clock; the looks report wall-clock times or yes/no, converted here. Activity:
- the in-Jupyter extension (jupyter_remote_ext.activity) sets the modification time of a file to
  the time of the last user act (a kernel executing or messaged, terminal input, a page opened or a
  change made by a logged-in user). The account can forge it: that only keeps the machine up.
- CPU used by the account's processes other than the Jupyter server itself (whose work for users
  the extension reports, and whose answers to an untouched tab's polling must not count) and its
  local Dask cluster (which touches the file while tasks run; its heartbeats must not count);
- open login sessions (SSH, console), from logind, else utmp;
- a GPU in use, where nvidia-smi is installed.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, UTC
from pathlib import Path

import psutil

from supervisor.dask.plan import LOCAL_CLUSTER_SCRIPT
from supervisor.settings import Idle

log = logging.getLogger(__name__)

LONGEST_LOOK = 30.0  # seconds between looks at most; shorter for short limits
SHORTEST_LOOK = 1.0
CPU_THRESHOLD = 0.05  # cores: the account's processes using more than 5 % of one core are active
GPU_THRESHOLD = 5  # percent utilisation of any GPU
TOOL_TIMEOUT = 5.0  # seconds a loginctl or nvidia-smi may take


class Step(enum.Enum):
    NOTHING = "nothing"
    WARN = "warn"
    ACT = "act"


@dataclass(frozen=True)
class Decision:
    step: Step
    due: float  # clock time the action is due
    next_look: float  # seconds until the daemon should look again


def enabled(idle: Idle) -> bool:
    return idle.stop_after_minutes > 0


def look_interval(idle: Idle) -> float:
    """A twentieth of the limit, within 1-30 s: a half-minute limit is still kept to the second."""
    return min(LONGEST_LOOK, max(SHORTEST_LOOK, idle.stop_after_minutes * 60 / 20))


def due_at(last_activity: float, idle: Idle) -> tuple[float, float]:
    """(warn at, act at) for this last activity; the warning never precedes the activity."""
    due = last_activity + idle.stop_after_minutes * 60
    return max(last_activity, due - idle.warn_minutes * 60), due


def decide(last_activity: float, idle: Idle, now: float, warned: bool) -> Decision:
    """What to do now, and when to look again (never later than the next step is due)."""
    warn_at, due = due_at(last_activity, idle)
    if now >= due:
        return Decision(Step.ACT, due, look_interval(idle))
    step = Step.WARN if now >= warn_at and not warned else Step.NOTHING
    upcoming = due if warned or step is Step.WARN else warn_at
    return Decision(step, due, max(0.0, min(look_interval(idle), upcoming - now)))


def warning_text(action: str, due_wall: datetime) -> str:
    what = "powers this machine off" if action == "poweroff" else "stops JupyterLab"
    return (f"Nothing has been active for a while: jupyter-remote {what} at "
            f"{due_wall.strftime('%H:%M:%S %Z')}. Any activity keeps it up: run a cell, type in "
            f"a terminal, or open or save a file.")


@dataclass
class ActivityClock:
    """The latest activity seen, on the daemon's clock, and what it was."""

    last: float
    what: str = "start"

    def note(self, when: float, what: str) -> bool:
        """Record an activity at `when`; True when it is newer than the last one."""
        if when <= self.last:
            return False
        self.last, self.what = when, what
        return True


def from_wall(wall: float, now: float, now_wall: float) -> float:
    """A wall-clock time as a time of the monotonic clock; the future (forged) counts as now."""
    return now - max(0.0, now_wall - wall)


def due_wall_time(due: float, now: float, now_wall: float) -> datetime:
    return datetime.fromtimestamp(now_wall, UTC) + timedelta(seconds=due - now)


# --- the looks ----------------------------------------------------------------------------------


def extension_activity(path: Path) -> float | None:
    """Wall time of the last user act the extension saw: the file's modification time.

    lstat, never open: the file is in a folder the account owns, and root must not follow a link
    the account put there (to a FIFO, say) into a hang."""
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


@dataclass
class AccountCpu:
    """CPU the account's processes used between two looks, beside the Jupyter server itself.

    Per process, keyed by (pid, start time): a process that started since the last look counts
    with all it used; one that ended takes its time with it (a look every few seconds misses
    little of a job that matters)."""

    uid: int
    seen: dict[tuple[int, float], float] = field(default_factory=dict)
    at: float | None = None

    def busy(self, now: float, spare: set[int]) -> bool:
        current: dict[tuple[int, float], float] = {}
        for pid in psutil.pids():
            try:
                # The owner of /proc/<pid>, one stat: a tenth of the cost of asking psutil for the
                # uids of every process of the machine.
                if pid in spare or os.stat(f"/proc/{pid}").st_uid != self.uid:
                    continue
                process = psutil.Process(pid)
                with process.oneshot():
                    times = process.cpu_times()
                    current[(pid, process.create_time())] = times.user + times.system
            except (OSError, psutil.Error):
                continue  # ended meanwhile
        used = sum(seconds - self.seen.get(key, 0.0) for key, seconds in current.items())
        elapsed = None if self.at is None else now - self.at
        self.seen, self.at = current, now
        return elapsed is not None and elapsed > 0 and used / elapsed > CPU_THRESHOLD


def reporting_processes(jupyter_pid: int | None) -> set[int]:
    """Processes whose work for users reaches the activity file, and whose CPU is not counted:
    Jupyter itself, and the local Dask cluster it runs (whose heartbeats alone use about a tenth
    of a core) with its workers."""
    if jupyter_pid is None:
        return set()
    spared = {jupyter_pid}
    try:
        for process in psutil.Process(jupyter_pid).children():
            if str(LOCAL_CLUSTER_SCRIPT) in process.cmdline()[1:2]:
                spared |= {process.pid, *(p.pid for p in process.children(recursive=True))}
    except psutil.Error:
        pass  # ended meanwhile: nothing of it to count
    return spared


LOGIND_SESSIONS = "/run/systemd/sessions"


def login_sessions() -> int:
    """How many login sessions (SSH or a console) are open: logind's, else utmp's."""
    loginctl = shutil.which("loginctl")
    try:
        # logind keeps a file a session here (read by sd-login, private in format): an empty
        # folder means none, without the cost of running loginctl at every look.
        listed_by_logind = os.listdir(LOGIND_SESSIONS)
    except OSError:
        listed_by_logind = None  # no logind: utmp says
    if listed_by_logind == []:
        return 0
    if loginctl and listed_by_logind:
        try:
            listed = subprocess.run([loginctl, "list-sessions", "--no-legend", "--output=json"],
                                    capture_output=True, text=True, timeout=TOOL_TIMEOUT)
            sessions = json.loads(listed.stdout or "[]")
        except (OSError, subprocess.TimeoutExpired, ValueError) as error:
            log.debug("loginctl: %s", error)
        else:
            if listed.returncode == 0:
                # systemd 256 and later also list the user managers' own sessions.
                return sum(1 for s in sessions if s.get("class", "user") == "user")
    try:
        return len(psutil.users())
    except OSError:
        return 0


def gpu_busy() -> bool:
    """Any NVIDIA GPU above the threshold; False where no nvidia-smi is installed or it fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        answer = subprocess.run(
            [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    values = [line.strip() for line in answer.stdout.splitlines()]
    return any(value.isdigit() and int(value) > GPU_THRESHOLD for value in values)


@dataclass
class Looks:
    """Every source of activity, looked at once; what was seen goes on the activity clock."""

    activity_file: Path
    account_uid: int
    cpu: AccountCpu = field(init=False)

    def __post_init__(self) -> None:
        self.cpu = AccountCpu(self.account_uid)

    def gather(self, clock: ActivityClock, now: float, jupyter_pid: int | None) -> None:
        now_wall = time.time()
        reported = extension_activity(self.activity_file)
        if reported is not None:
            clock.note(from_wall(reported, now, now_wall), "JupyterLab")
        if self.cpu.busy(now, spare=reporting_processes(jupyter_pid)):
            clock.note(now, f"CPU use by processes of uid {self.account_uid}")
        if login_sessions():
            clock.note(now, "a login session")
        if gpu_busy():
            clock.note(now, "a GPU")


@dataclass
class IdleWatch:
    """The daemon's idle stop: the activity clock, the looks, and whether the warning is out."""

    activity: ActivityClock
    settings: Idle = field(default_factory=Idle)
    looks: Looks | None = None
    warned: bool = False
    due: float | None = None  # when the action is due, on the daemon's clock; None: idle stop off

    def configure(self, settings: Idle, activity_file: Path, account_uid: int) -> bool:
        """At start and on every reload; True when a warning given is withdrawn by the change."""
        if self.looks is None or self.looks.activity_file != activity_file \
                or self.looks.account_uid != account_uid:
            self.looks = Looks(activity_file, account_uid)
        withdrawn = self.warned and settings != self.settings
        if settings != self.settings:
            self.settings, self.warned = settings, False
        if not enabled(settings):
            self.due = None
        return withdrawn

    def look(self, now: float, jupyter_pid: int | None) -> tuple[Decision, bool]:
        """The decision, and whether activity since the warning called it off."""
        assert self.looks is not None
        self.looks.gather(self.activity, now, jupyter_pid)
        warn_at, _ = due_at(self.activity.last, self.settings)
        called_off = self.warned and now < warn_at
        if called_off:
            self.warned = False
        decision = decide(self.activity.last, self.settings, now, self.warned)
        if decision.step is Step.WARN:
            self.warned = True
        self.due = decision.due
        return decision, called_off

    def idle_seconds(self, now: float) -> float | None:
        return None if self.due is None else round(max(0.0, now - self.activity.last), 1)

    def action_at(self, now: float, now_wall: float) -> str | None:
        if self.due is None:
            return None
        return due_wall_time(self.due, now, now_wall).isoformat(timespec="seconds")


def describe(settings: Idle) -> str:
    """The [idle] setting, as `check` prints it."""
    if not enabled(settings):
        return "off ([idle] stop_after_minutes = 0)"
    what = "power the machine off" if settings.action == "poweroff" else "stop jupyter-remote"
    return (f"{what} after {settings.stop_after_minutes:g} minutes with nothing active "
            f"(warned {settings.warn_minutes:g} minutes before)")


def status_line(idle_seconds: float | None, action_at: str | None) -> str | None:
    """What `status` says of the idle stop; None when it is off."""
    if idle_seconds is None:
        return None
    return f"idle:         {idle_seconds:.0f} s with nothing active; idle action due at {action_at}"


def write_notice(path: Path, notice: dict[str, str], mode: int,
                 owner: tuple[int, int] | None) -> None:
    """The warning open JupyterLabs poll through the extension ({} withdraws it)."""
    from supervisor.files import write_atomic

    try:
        write_atomic(path, json.dumps(notice).encode(), mode=mode, owner=owner)
    except OSError as error:
        log.warning("cannot write the idle warning for JupyterLab: %s", error)


def power_off() -> None:
    """Ask systemd to power the machine off (an EBS-backed EC2 instance then stops)."""
    try:
        asked = subprocess.run(["systemctl", "--no-block", "poweroff"], capture_output=True,
                               text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.error("cannot power the machine off: systemctl: %s", error)
        return
    if asked.returncode:
        log.error("cannot power the machine off: systemctl poweroff: %s",
                  asked.stderr.strip() or f"exit status {asked.returncode}")
