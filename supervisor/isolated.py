"""Running a function in a short-lived forked child, so what it imports never stays resident.

Validating settings needs pydantic (about 20 MB), certificate work `cryptography` (about 10 MB),
hashing the first password argon2's 10 MB; the daemon runs for months. `call` waits for the
answer; `start` returns at once, and the daemon's loop reads the answer when its pipe is readable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from supervisor.errors import JupyterRemoteError, SettingsError
from supervisor.loop import forget_signal_handlers

_ERRORS = {"SettingsError": SettingsError, "JupyterRemoteError": JupyterRemoteError}


class Pending:
    """A function running in a child; `fd` becomes readable when its answer is complete."""

    def __init__(self, pid: int, fd: int, what: str) -> None:
        self.pid, self.fd, self.what = pid, fd, what
        self._chunks: list[bytes] = []

    def read(self) -> bool:
        """Read what has arrived; True once the answer is complete (the child closed the pipe)."""
        chunk = os.read(self.fd, 65536)
        if chunk:
            self._chunks.append(chunk)
            return False
        os.close(self.fd)
        return True

    def result(self) -> Any:
        """The function's return value, or its error raised here."""
        return _answer(b"".join(self._chunks).decode(), self.what)


def start(what: str, function: Callable[..., Any], *args: Any) -> Pending:
    """function(*args) in a child, without waiting; `what` names it in errors. The caller reaps the
    child (any waitpid(-1) does) and reads the answer from Pending.fd."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _serve(write_end, function, args)
    os.close(write_end)
    os.set_inheritable(read_end, False)
    return Pending(pid, read_end, what)


def call(function: Callable[..., Any], *args: Any, what: str = "a worker") -> Any:
    """function(*args) in a child; returns its result (plain data, a dataclass as a dict), or
    raises its error."""
    return finish(start(what, function, *args))


def finish(pending: Pending) -> Any:
    """Wait for a child `start` began, collect it, and return its result or raise its error."""
    while not pending.read():
        pass
    try:
        os.waitpid(pending.pid, 0)
    except ChildProcessError:
        pass  # already collected
    return pending.result()


def _serve(write_end: int, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """The child: never returns into the caller's code."""
    forget_signal_handlers()
    code = 0
    try:
        value = function(*args)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        result: dict[str, Any] = {"result": value}
    except JupyterRemoteError as error:
        result, code = {"error": type(error).__name__, "lines": error.lines}, 1
    except BaseException as error:
        result, code = {"error": "JupyterRemoteError", "lines": [f"internal error: {error!r}"]}, 1
    try:
        with os.fdopen(write_end, "w") as stream:
            json.dump(result, stream)
        sys.stderr.flush()
    finally:
        os._exit(code)


def _answer(text: str, what: str) -> Any:
    try:
        answer = json.loads(text)
    except ValueError:
        raise JupyterRemoteError(f"{what} died without an answer") from None
    if "error" in answer:
        raise _ERRORS.get(answer["error"], JupyterRemoteError)(*answer["lines"])
    return answer["result"]
