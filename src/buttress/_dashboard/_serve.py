"""``buttress dashboard``: the dashboard of a configuration's infrastructure, served by uvicorn."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .._redact import redacted_logger
from . import dashboard_app
from ._app import LOOPBACK_HOSTS

TOKEN_ENV = "BUTTRESS_DASHBOARD_TOKEN"
_log = redacted_logger("buttress.dashboard")


def token_from(path: str | None) -> str | None:
    """The admin token: from ``path`` when given, else ``$BUTTRESS_DASHBOARD_TOKEN`` (unset or
    empty: none, the dashboard is read-only)."""
    if path is not None:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("--token-file", f"cannot read {path}: {exc}") from None
        source = "--token-file"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        source = TOKEN_ENV
    if not token:
        if path is not None:
            raise ConfigError("--token-file", f"{path} is empty")
        return None
    if len(token) < 16:
        raise ConfigError(
            source, f"the admin token must be at least 16 characters, got {len(token)}"
        )
    return token


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    config: str,
    *,
    namespace: str,
    host: str,
    port: int,
    token: str | None,
    interval: float,
) -> int:
    """Build ``config``'s infrastructure, serve its dashboard until interrupted, then close."""
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - the extra is not installed
        raise ConfigError(
            "dashboard",
            "serving the dashboard needs uvicorn: pip install uvicorn (the 'dashboard' extra)",
        ) from None
    from .._infrastructure import Infrastructure

    loopback = is_loopback(host)
    infra = Infrastructure(namespace, config)
    app = dashboard_app(
        infra,
        token=token,
        interval=interval,
        # On loopback, only loopback names: a page on another site whose name is made to
        # point at 127.0.0.1 (DNS rebinding) gets nothing.
        allowed_hosts=LOOPBACK_HOSTS if loopback else None,
        reload_from=config,
    )
    if token is not None and not loopback:
        _log.warning(
            "the dashboard listens on %s with actions enabled: put it behind TLS (a reverse "
            "proxy), or the admin token crosses the network in clear text",
            host,
        )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.end_streams()  # open pages would hold the shutdown up
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    shown = f"[{host}]" if ":" in host else host
    mode = "actions enabled" if token is not None else "read-only"
    print(
        f"buttress dashboard: {namespace} on http://{shown}:{port}/ ({mode})",
        file=sys.stderr,
        flush=True,
    )
    try:
        with infra:
            server.run()
    except KeyboardInterrupt:  # pragma: no cover - uvicorn handles SIGINT itself
        pass
    return 0 if server.started else 1
