"""The command envelope of the MQTT contract, parsed strictly, with stable error codes."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gatewayd.kernel.errors import CommandError, ErrorCode
from gatewayd.kernel.siteinfo import Hazard, SrpState
from gatewayd.kernel.validation import bad_request

#: Larger bodies are refused before parsing.
MAX_COMMAND_BYTES = 16 * 1024


class Action(StrEnum):
    HOLD = "hold"
    SECURE = "secure"
    LOCKDOWN = "lockdown"
    EVACUATE = "evacuate"
    SHELTER = "shelter"
    RELEASE = "release"
    UNLOCK = "unlock"
    LOCK = "lock"
    DRILL = "drill"
    STATUS = "status"


class Command(BaseModel):
    """``id, ts, actor, action, scope | door, params, site, sig`` (see docs/mqtt-api.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    #: Issue time, epoch seconds (a number) or ISO 8601 with a zone.
    ts: float = Field(allow_inf_nan=False)
    actor: str = Field(min_length=1, max_length=128)
    action: Action
    scope: str | None = Field(default=None, max_length=200)
    door: str | None = Field(default=None, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    #: The site the sender meant; optional, since the signature covers the site either way.
    site: str | None = Field(default=None, max_length=64)
    sig: str | None = Field(default=None, max_length=512)

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError as exc:
                raise ValueError("ts must be epoch seconds or ISO 8601") from exc
            if parsed.tzinfo is None:
                raise ValueError("ts must carry a time zone (e.g. 'Z')")
            return parsed.timestamp()
        if isinstance(value, bool):
            # pydantic turns ValueError (not TypeError) into a validation error.
            raise ValueError("ts must be epoch seconds or ISO 8601")  # noqa: TRY004
        return value


def parse_command(payload: bytes) -> Command:
    """Decode and validate a command body; raise :class:`CommandError` naming the fault."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(
            ErrorCode.TOO_LARGE, f"command is {len(payload)} bytes, max {MAX_COMMAND_BYTES}"
        )
    try:
        body = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CommandError(ErrorCode.BAD_REQUEST, f"command is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise CommandError(
            ErrorCode.BAD_REQUEST, f"command is not JSON: {exc.msg} at {exc.pos}"
        ) from exc
    except RecursionError as exc:
        raise CommandError(ErrorCode.BAD_REQUEST, "command nests too deeply") from exc
    if not isinstance(body, dict):
        raise CommandError(ErrorCode.BAD_REQUEST, "command must be a JSON object")
    try:
        return Command.model_validate(body)
    except ValidationError as exc:
        raise bad_request(exc) from exc


def command_id_of(payload: bytes) -> str | None:
    """Best-effort id of a command that failed to parse, to echo in the reply."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    ident = body.get("id") if isinstance(body, dict) else None
    return ident if isinstance(ident, str) and len(ident) <= 128 else None


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateParams(_Params):
    """``params`` of hold, secure, lockdown, evacuate, shelter."""

    #: Required for shelter: what the shelter is for.
    hazard: Hazard | None = None
    #: ``panic_app``: the command comes from a panic-button app (raises an ``alarm`` event).
    source: Literal["panic_app"] | None = None
    #: Where the panic app user is (building, floor, room as signed).
    location: dict[str, str] = Field(default_factory=dict)
    #: The second person, when stepping a campus lockdown down needs two (docs/security.md 5).
    cosigner: str | None = Field(default=None, max_length=128)
    cosig: str | None = Field(default=None, max_length=512)


class UnlockParams(_Params):
    """``params`` of unlock: with either key, a bounded responder override."""

    duration_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    momentary: bool = False


class ReleaseParams(_Params):
    """``params`` of release: the second person of a two-person campus release."""

    cosigner: str | None = Field(default=None, max_length=128)
    cosig: str | None = Field(default=None, max_length=512)


class DrillParams(_Params):
    state: SrpState
    scope: str | None = Field(default=None, max_length=200)
    duration_s: float = Field(gt=0, allow_inf_nan=False)
    #: Dry run (the default): decisions published, no door moves.
    dry_run: bool = True
    hazard: Hazard | None = None


P = TypeVar("P", bound=BaseModel)


def parse_params(model: type[P], command: Command) -> P:
    """Validate ``command.params``; a bad field is ``bad_request`` naming ``params.<field>``."""
    try:
        return model.model_validate(command.params)
    except ValidationError as exc:
        raise bad_request(exc, prefix="params.") from exc
