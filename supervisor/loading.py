"""Reading and validating settings.toml: in this process (commands) or in a short-lived child (the
daemon, which must not keep pydantic's 20 MB for months)."""

from __future__ import annotations

from pathlib import Path

from supervisor import isolated
from supervisor.settings import Settings


def load(path: Path, *, euid: int | None = None) -> Settings:
    """Read and validate one settings file; raises SettingsError with every problem, one a line."""
    from supervisor import schema  # pydantic: only where validation happens

    return schema.load(path, euid=euid)


def load_isolated(path: Path, begun: isolated.Pending | None = None) -> Settings:
    """`load` in a short-lived child, so that pydantic never stays resident in the caller;
    `begun`: that child, started earlier with start_isolated."""
    return Settings.from_sections(isolated.finish(begun or start_isolated(path)), path)


def start_isolated(path: Path) -> isolated.Pending:
    """Begin validating in a child now, to overlap it with other work (the daemon's imports)."""
    return isolated.start("the settings validation", _sections, path)


def _sections(path: Path) -> dict[str, dict[str, object]]:
    return load(path).sections()
