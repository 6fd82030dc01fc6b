"""The operator's actions from the dashboard: who may ask, what a request means, what it does.

Three steps, in order: :func:`refusal` decides whether a request may act at all (the admin
token, compared in constant time; the request's origin), :func:`parse` what it asks for (a
clear error naming what is wrong), :func:`perform` does it, records it in the infrastructure's
``operator_actions`` (shown in health) and emits ``operator.action``.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import events
from .._redact import redacted_logger

EV_ACTION = ("buttress", "operator", "action")
BREAKER_ACTIONS = ("force_open", "disable", "reset")
ACTIONS = (*BREAKER_ACTIONS, "stop_chaos", "reload")
MAX_REASON = 500
MAX_BY = 100
MAX_BODY = 4096
_log = redacted_logger("buttress.dashboard")


class ActionError(Exception):
    """A request refused: ``status`` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Action:
    """One operator request, checked: ``target`` names a breaker for a breaker action."""

    action: str
    target: str | None
    fleet: bool
    reason: str
    by: str  # the operator's name, when the request gave one


def refusal(token: str | None, headers: Mapping[str, str], *, scheme: str) -> ActionError | None:
    """Why a request may not act (``None``: it may).

    Actions need the admin token as ``Authorization: Bearer TOKEN``. A browser sends no such
    header on a cross-site form or image, and a cross-origin ``fetch`` carrying it needs a
    CORS preflight the dashboard never grants; the ``Origin`` and ``Sec-Fetch-Site`` checks
    refuse such requests outright, before the token is looked at.
    """
    if token is None:
        return ActionError(403, "actions are off: the dashboard was started without an admin token")
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return ActionError(403, f"cross-origin request refused (Sec-Fetch-Site: {site})")
    origin = headers.get("origin")
    host = headers.get("host")
    if origin is not None and (host is None or origin != f"{scheme}://{host}"):
        return ActionError(403, "cross-origin request refused (Origin is not this dashboard)")
    given = headers.get("authorization", "")
    kind, _, value = given.partition(" ")
    if kind.lower() != "bearer" or not value:
        return ActionError(401, "missing admin token (Authorization: Bearer TOKEN)")
    if not hmac.compare_digest(value.strip().encode(), token.encode()):
        return ActionError(401, "wrong admin token")
    if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return ActionError(400, "the body must be JSON (Content-Type: application/json)")
    return None


def parse(body: bytes, breakers: Mapping[str, Any], *, can_reload: bool) -> Action:
    """The request's action, or :class:`ActionError` naming what is wrong with it."""
    doc = _json_object(body)
    action = doc.get("action")
    if action not in ACTIONS:
        raise ActionError(400, f"action: must be one of {', '.join(ACTIONS)}, got {action!r}")
    reason = doc.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ActionError(400, "reason: required, a short text saying why")
    if len(reason) > MAX_REASON:
        raise ActionError(400, f"reason: at most {MAX_REASON} characters, got {len(reason)}")
    fleet = doc.get("fleet", False)
    if not isinstance(fleet, bool):
        raise ActionError(400, f"fleet: must be true or false, got {fleet!r}")
    target = doc.get("target")
    if action in BREAKER_ACTIONS:
        if not isinstance(target, str):
            raise ActionError(400, f"target: {action} needs a breaker's name, got {target!r}")
        breaker = breakers.get(target)
        if breaker is None:
            raise ActionError(404, f"target: no breaker named {target!r}")
        if fleet and getattr(breaker, "fleet", None) is None:
            raise ActionError(400, f"fleet: breaker {target!r} is not shared by a fleet")
    elif target is not None or fleet:
        raise ActionError(400, f"{action} takes no target and no fleet")
    by = doc.get("by", "")
    if not isinstance(by, str) or len(by) > MAX_BY:
        raise ActionError(400, f"by: the operator's name, at most {MAX_BY} characters")
    if action == "reload" and not can_reload:
        raise ActionError(
            400, "reload: the dashboard was not given the configuration file to reload from"
        )
    return Action(action, target, fleet, reason.strip(), by.strip())


def perform(infra: Any, act: Action, *, by: str, reload_from: str | os.PathLike[str] | None) -> str:
    """Do ``act`` on ``infra`` and record it; the message the operator sees. ``by`` is where
    the request came from, after the operator's own name when the request gave one."""
    if act.by:
        by = f"{act.by} via {by}"
    if act.action in BREAKER_ACTIONS:
        assert act.target is not None
        breaker = infra.breakers[act.target]
        getattr(breaker, act.action)(fleet=act.fleet, reason=act.reason, by=by)
        where = "every process of the fleet" if act.fleet else "this process"
        message = f"{act.target}: {act.action.replace('_', ' ')} in {where}"
    elif act.action == "stop_chaos":
        infra.chaos.disable()
        message = "chaos stopped: every fault injection is off"
    else:
        assert reload_from is not None
        try:
            reloaded = infra.reload(reload_from)
        except Exception as exc:  # the new file's own error, named: nothing changed
            raise ActionError(400, f"reload refused, nothing changed: {exc}") from None
        message = f"reloaded: {reloaded.summary()}"
    record = {
        "at": infra.clock.time(),
        "action": act.action,
        "target": act.target,
        "fleet": act.fleet,
        "reason": act.reason,
        "by": by,
    }
    infra.operator_actions.append(record)
    _log.warning("operator action by %s: %s (reason: %s)", by, message, act.reason)
    if events.enabled(EV_ACTION):
        events.emit(
            EV_ACTION,
            {},
            {
                "namespace": infra.namespace,
                "action": act.action,
                "target": act.target or "",
                "fleet": act.fleet,
                "reason": act.reason,
                "by": by,
            },
        )
    return message


def _json_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise ActionError(400, f"body: at most {MAX_BODY} bytes")
    try:
        doc = json.loads(body or b"null")
    except ValueError as exc:
        raise ActionError(400, f"body: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ActionError(400, f"body: a JSON object, got {type(doc).__name__}")
    return doc
