"""What a console user may ask for, and the command envelope the console sends for them.

The role rules are the security model's own (:mod:`gatewayd.security.roles`), so the page
shows exactly the buttons the command path would accept from the user's actor, and refuses
exactly what the authorizer would refuse.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gatewayd.console.config import ConsoleUser
from gatewayd.kernel.command import Action
from gatewayd.kernel.errors import CommandError, ErrorCode
from gatewayd.kernel.validation import bad_request
from gatewayd.security.keys import KeyFileError, ServerKeys
from gatewayd.security.roles import Role, permit
from gatewayd.security.roles import allowed_actions as roles_allow
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
        raise bad_request(exc) from exc
    if request.action not in CONSOLE_ACTIONS:
        raise CommandError(ErrorCode.BAD_REQUEST, f"the console does not send {request.action}")
    return request


def allowed_actions(roles: Iterable[Role]) -> list[str]:
    """Actions whose buttons the page shows; a responder's ``unlock`` is the bounded one."""
    allowed = roles_allow(roles)
    return [str(a) for a in CONSOLE_ACTIONS if a in allowed]


def authorize(user: ConsoleUser, request: ConsoleRequest, *, responder_max_s: float) -> None:
    """Refuse with ``forbidden`` what the user's roles do not allow (the authorizer's policy)."""
    permit(user.roles, request.action, door=request.door, scope=request.scope,
           params=request.params, responder_max_s=responder_max_s, who=user.name)  # fmt: skip


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
        raise CommandError(
            ErrorCode.NO_KEY, f"the console cannot sign for this user: {exc}"
        ) from exc
    return signed(body, key, site=site)
