"""The operator dashboard: a live page of an infrastructure's state (see ``docs/dashboard.md``).

``_frame.py`` decides what a frame shows (pure), ``_actions.py`` who may act and what an action
does, ``_refused.py`` counts refused ids on request, ``_app.py`` is the ASGI shell, and
``static/`` the page itself (plain HTML, CSS and JavaScript, no build step).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ._app import DashboardApp

__all__ = ["DashboardApp", "dashboard_app"]


def dashboard_app(
    infra: Any,
    *,
    token: str | None = None,
    interval: float = 1.0,
    history: int = 60,
    allowed_hosts: Sequence[str] | None = None,
    reload_from: str | os.PathLike[str] | None = None,
) -> DashboardApp:
    """The operator dashboard of ``infra``, as an ASGI app to mount (``docs/dashboard.md``).

    Read-only unless ``token`` (the admin token, at least 16 characters) is given: then the
    page offers force-open, disable and reset of breakers (in this process, or fleet-wide
    for a fleet breaker), stopping all chaos, and reloading ``reload_from`` (a configuration
    file) when given; every request that acts must carry the token. The page is refreshed
    every ``interval`` seconds and its sparklines show the last ``history`` frames.
    ``allowed_hosts``: the only ``Host`` names answered (``None``: any), a guard against DNS
    rebinding where the dashboard listens on a loopback or private address.
    """
    return DashboardApp(
        infra,
        token=token,
        interval=interval,
        history=history,
        allowed_hosts=allowed_hosts,
        reload_from=reload_from,
    )
