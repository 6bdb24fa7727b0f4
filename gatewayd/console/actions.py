"""What a console user may ask for, and the command envelope the console sends for them.

The role rules are the security model's own (:data:`gatewayd.auth.ROLE_ACTIONS`), so the page
shows exactly the buttons the command path would accept from the user's actor.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatewayd.console.config import ConsoleUser
from gatewayd.kernel.command import Action
from gatewayd.kernel.errors import CommandError
from gatewayd.security.keys import KeyFileError, ServerKeys
from gatewayd.security.roles import ROLE_ACTIONS, Role
from gatewayd.security.signing import signed

#: What the page can send; ``status`` is read through the campus view instead.
CONSOLE_ACTIONS = (
    Action.HOLD,
    Action.SECURE,
    Action.LOCKDOWN,
    Action.EVACUATE,
    Action.SHELTER,
    Action.RELEASE,
    Action.DRILL,
    Action.LOCK,
    Action.UNLOCK,
)


class ConsoleRequest(BaseModel):
    """The body of ``POST /api/command``: what to do where; the server adds who and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Action
    scope: str | None = Field(default=None, max_length=200)
    door: str | None = Field(default=None, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)


def parse_request(body: object) -> ConsoleRequest:
    """Validate a page request; ``CommandError('bad_request')`` names the field."""
    try:
        request = ConsoleRequest.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise CommandError("bad_request", problems) from exc
    if request.action not in CONSOLE_ACTIONS:
        raise CommandError("bad_request", f"the console does not send {request.action}")
    return request


def allowed_actions(roles: Iterable[Role]) -> list[str]:
    """Actions whose buttons the page shows; a responder's ``unlock`` is the bounded one."""
    allowed = {str(a) for role in roles for a in ROLE_ACTIONS.get(role, ())}
    if Role.RESPONDER in roles:
        allowed.add(str(Action.UNLOCK))
    return [str(a) for a in CONSOLE_ACTIONS if str(a) in allowed]


def authorize(user: ConsoleUser, request: ConsoleRequest, *, responder_max_s: float) -> None:
    """Refuse with ``forbidden`` what the user's roles do not allow (as the command guard)."""
    if any(request.action in ROLE_ACTIONS.get(role, ()) for role in user.roles):
        return
    if Role.RESPONDER in user.roles and request.action is Action.UNLOCK:
        duration = request.params.get("duration_s")
        bounded = (
            isinstance(duration, int | float)
            and not isinstance(duration, bool)
            and 0 < duration <= responder_max_s
        )
        if request.door is not None and request.scope is None and bounded:
            return
        raise CommandError(
            "forbidden", f"a responder unlocks one door for at most {responder_max_s:g} s"
        )
    roles = ", ".join(sorted(user.roles))
    raise CommandError("forbidden", f"{user.name} ({roles}) may not {request.action}")


def envelope(
    user: ConsoleUser, request: ConsoleRequest, *, now: float | None = None
) -> dict[str, Any]:
    """The MQTT command body for a request: a fresh id, the time, the user's actor."""
    body: dict[str, Any] = {
        "id": f"console-{uuid.uuid4().hex}",
        "ts": time.time() if now is None else now,
        "actor": user.actor,
        "action": str(request.action),
    }
    if request.scope is not None:
        body["scope"] = request.scope
    if request.door is not None:
        body["door"] = request.door
    if request.params:
        body["params"] = dict(request.params)
    return body


def sign_envelope(body: Mapping[str, Any], keys: ServerKeys, *, site: str) -> dict[str, Any]:
    """Sign a command body for ``site`` with the server-held key of its actor.

    The gateway checks this signature like any other (``security.console_keys``): a person
    signed in to the console acts as their own actor, with their own key, in the audit log.
    """
    try:
        key = keys.key_for(str(body["actor"]))
    except KeyFileError as exc:
        raise CommandError("no_key", f"the console cannot sign for this user: {exc}") from exc
    return signed(body, key, site=site)
