"""Warnings about settings that are valid but probably not what the operator wants."""

from __future__ import annotations

import re

from supervisor.settings import Settings, is_loopback

# `--ServerApp.trust_xheaders=True`, `--NotebookApp.trust-xheaders true`, `--trust_xheaders=1`...
_TRUST_XHEADERS = re.compile(r"^--?(?:\w+\.)?trust[_-]xheaders(?:=(.*))?$", re.IGNORECASE)
_FALSE = {"false", "0", "no", "off"}


def trusts_xheaders(extra_args: tuple[str, ...] | list[str]) -> bool:
    """Whether these `jupyter lab` arguments turn trust_xheaders on (the last one wins, as in
    traitlets)."""
    trusted = False
    for index, argument in enumerate(extra_args):
        found = _TRUST_XHEADERS.match(argument)
        if not found:
            continue
        value = found[1]
        if value is None:  # the value is the next argument
            value = extra_args[index + 1] if index + 1 < len(extra_args) else ""
        trusted = value.strip().lower() not in _FALSE
    return trusted


def settings_warnings(settings: Settings) -> list[str]:
    """One line each; none when nothing looks wrong."""
    warnings = []
    if trusts_xheaders(settings.server.extra_args) and not is_loopback(settings.server.ip):
        warnings.append(
            f"warning: {settings.source}: [server] extra_args: trust_xheaders is on while "
            f"[server] ip is {settings.server.ip}, not loopback: any client can choose the address "
            "Jupyter logs (and fail2ban bans) with an X-Real-IP header; trust it only behind a "
            "proxy on this machine that overwrites X-Real-IP and X-Forwarded-For"
        )
    if settings.dask.enabled and settings.dask.cluster.startswith("tcp://"):
        warnings.append(
            f"warning: {settings.source}: [dask] cluster: tcp:// is neither encrypted nor "
            "authenticated: whoever reaches that scheduler, or answers in its place (any user of "
            "this machine, for a loopback one), runs code in the notebooks and on the workers, and "
            "reads what they compute; use tls://"
        )
    return warnings
