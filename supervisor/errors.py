"""The project's error types. The CLI maps each to one exit code; nothing below it exits."""


class JupyterRemoteError(Exception):
    """A failure the user can act on; its lines are printed as they are, never a traceback."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


class SettingsError(JupyterRemoteError):
    """The settings file (or the password it points to) is invalid: exit 78 (EX_CONFIG)."""


class NotRunning(JupyterRemoteError):
    """No daemon is running for these settings: exit 3, as LSB status commands do."""


class ReloadRejected(JupyterRemoteError):
    """The daemon refused new settings and kept serving the old ones: exit 78."""


EX_CONFIG = 78  # sysexits.h: configuration error; the unit's RestartPreventExitStatus
EXIT_NOT_RUNNING = 3  # as LSB `status` commands


def exit_code(error: JupyterRemoteError) -> int:
    """The one map from error types to exit codes, for every entry point."""
    if isinstance(error, (SettingsError, ReloadRejected)):
        return EX_CONFIG
    if isinstance(error, NotRunning):
        return EXIT_NOT_RUNNING
    return 1


def describe(error: BaseException) -> tuple[list[str], int]:
    """The lines to print and the exit code for any error that ends a command or the daemon:
    the one path from errors to exits, so no entry point ever shows a traceback."""
    if isinstance(error, JupyterRemoteError):
        return error.lines, exit_code(error)
    if isinstance(error, KeyboardInterrupt):
        return [], 130
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return [f"jupyter-remote: {error.strerror or error}{where}"], 1
    return [f"jupyter-remote: internal error: {error!r}"], 1
