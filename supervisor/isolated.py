"""Running a function in a short-lived forked child, so what it imports never stays resident.

Certificate work needs `cryptography` (about 10 MB) a few times a day; the daemon runs for months.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
from typing import Any, Callable

from supervisor.errors import JupyterRemoteError, SettingsError

log = logging.getLogger(__name__)
_ERRORS = {"SettingsError": SettingsError, "JupyterRemoteError": JupyterRemoteError}


def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """function(*args) in a child; returns its result (plain data, or a dataclass as a dict), or
    raises its error."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        os.close(read_end)
        _forget_signal_handlers()
        code = 0
        try:
            value = function(*args, **kwargs)
            result = {"result": dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value}
        except JupyterRemoteError as error:
            result, code = {"error": type(error).__name__, "lines": error.lines}, 1
        except BaseException as error:  # noqa: BLE001 - reported to the parent, which logs it
            result, code = {"error": "JupyterRemoteError", "lines": [f"internal error: {error!r}"]}, 1
        try:
            with os.fdopen(write_end, "w") as stream:
                json.dump(result, stream)
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as stream:
        text = stream.read()
    os.waitpid(pid, 0)
    try:
        answer = json.loads(text)
    except ValueError:
        raise JupyterRemoteError("a certificate worker died without an answer") from None
    if "error" in answer:
        raise _ERRORS.get(answer["error"], JupyterRemoteError)(*answer["lines"])
    return answer["result"]


def _forget_signal_handlers() -> None:
    # The parent's handlers queue signals for its loop; in the child they would only mislead it.
    signal.set_wakeup_fd(-1)
    for number in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
