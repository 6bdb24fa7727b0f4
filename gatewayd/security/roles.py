"""The role policy: who may ask for what. The one copy; the authorizer, the console and the CLI
all ask it, so a button the console shows is a command the gateway accepts.

docs/security.md (section 2) describes it; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gatewayd.kernel.command import Action
from gatewayd.kernel.errors import CommandError, ErrorCode


class Role(StrEnum):
    OPERATOR = "operator"
    ADMINISTRATOR = "administrator"
    RESPONDER = "responder"
    #: The rules engine on the box; never accepted from outside.
    SYSTEM = "system"
    #: District operations: administrator rights on the sites listed in ``Actor.sites``.
    DISTRICT = "district"


#: What any staff member may start: the SRP states, drills, locking a door, reading status.
TRIGGERS = frozenset(
    {
        Action.HOLD,
        Action.SECURE,
        Action.LOCKDOWN,
        Action.EVACUATE,
        Action.SHELTER,
        Action.DRILL,
        Action.LOCK,
        Action.STATUS,
    }
)
#: What each role may do on its site, whatever the parameters (responders are handled apart).
ROLE_ACTIONS: Mapping[Role, frozenset[Action]] = {
    Role.OPERATOR: TRIGGERS,
    Role.ADMINISTRATOR: TRIGGERS | {Action.RELEASE, Action.UNLOCK},
    Role.DISTRICT: TRIGGERS | {Action.RELEASE, Action.UNLOCK},
}
#: Roles whose actors may release (and co-sign a two-person campus release).
RELEASE_ROLES = frozenset({Role.ADMINISTRATOR, Role.DISTRICT})


def may_release(roles: Iterable[Role]) -> bool:
    return any(role in RELEASE_ROLES for role in roles)


def permit(
    roles: Iterable[Role],
    action: Action,
    *,
    door: str | None,
    scope: str | None,
    params: Mapping[str, Any],
    responder_max_s: float,
    who: str,
) -> None:
    """Raise ``forbidden`` unless one of ``roles`` may send this command.

    A responder may unlock one door (named by ``door``), momentarily or for at most
    ``responder_max_s``; every other right depends on the action alone.
    """
    held = frozenset(roles)
    if any(action in ROLE_ACTIONS.get(role, ()) for role in held):
        return
    if Role.RESPONDER in held and action is Action.UNLOCK:
        _responder_bounds(door, scope, params, responder_max_s)
        return
    names = ", ".join(sorted(held))
    raise CommandError(ErrorCode.FORBIDDEN, f"{who} ({names}) may not {action}")


def _responder_bounds(
    door: str | None, scope: str | None, params: Mapping[str, Any], responder_max_s: float
) -> None:
    duration = params.get("duration_s")
    momentary = params.get("momentary") is True
    bounded = (
        isinstance(duration, int | float)
        and not isinstance(duration, bool)
        and 0 < duration <= responder_max_s
    )
    if door is None or scope is not None:
        raise CommandError(ErrorCode.FORBIDDEN, "a responder unlocks one door, named by door")
    if not (momentary or bounded):
        raise CommandError(
            ErrorCode.FORBIDDEN,
            f"a responder unlock needs params.momentary or params.duration_s"
            f" <= {responder_max_s:g} s",
        )


def allowed_actions(roles: Iterable[Role]) -> frozenset[Action]:
    """Actions these roles may send in some form (a responder's ``unlock`` is the bounded one)."""
    held = frozenset(roles)
    allowed = {action for role in held for action in ROLE_ACTIONS.get(role, ())}
    if Role.RESPONDER in held:
        allowed.add(Action.UNLOCK)
    return frozenset(allowed)


def least_role(action: Action, params: Mapping[str, Any]) -> Role:
    """The least role that may send this command (whose DEMO key the CLI signs with)."""
    if action is Action.UNLOCK and ("duration_s" in params or params.get("momentary")):
        return Role.RESPONDER
    if action in (Action.RELEASE, Action.UNLOCK):
        return Role.ADMINISTRATOR
    return Role.OPERATOR


@dataclass(frozen=True, slots=True)
class Authority:
    """Who stands behind one admitted command: its actor's roles and a verified co-signer.

    The authorizer decides what a role may ask for; what a command would *do* (whether it
    leaves doors unlocked that a lockdown holds) is decided where the state is, by the command
    service, which asks this.
    """

    actor: str
    roles: frozenset[Role]
    #: The second person of a two-person rule, when a valid co-signature came with the command.
    cosigner: str | None = None

    @property
    def may_release(self) -> bool:
        return may_release(self.roles)

    @classmethod
    def system(cls, actor: str) -> Authority:
        """The gateway's own commands (its rules, wired inputs): the site's configuration."""
        return cls(actor, frozenset({Role.SYSTEM}))

    @property
    def is_system(self) -> bool:
        return Role.SYSTEM in self.roles
