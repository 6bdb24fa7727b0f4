"""Cards and PINs at readers: who may open which door now, and the readers showing door state.

A credential is decided here and nowhere else. During a lockdown (a lockdown-family claim
holds the door locked) only a **responder** credential opens it, as the responder override
does (bounded by the site policy, relocked by the expiry service); any other card is refused,
so a lockdown never lets a non-responder card open a locked door. In normal state a valid
credential unlocks the door momentarily at :data:`Priority.ACCESS`, below every SRP state and
fire alarm. A change that unlocks goes through :meth:`Core.commit` (recorded first) like any
other. Unknown, expired and out-of-hours cards are refused: shown on the reader, evented
(``event/access``) and audited, never with the card number (its digest's first 12 digits name
it).

Readers show the door's state (lockdown red, responder green, fault amber) from the door
table's changes; a brief indication answers each card.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from gatewayd.kernel.doorstate import DoorState
from gatewayd.kernel.driver import AnyDriver
from gatewayd.kernel.errors import CommandError, DeviceError
from gatewayd.kernel.events import (
    CredentialRead,
    DeviceHealth,
    Health,
    Indication,
    ReaderReport,
    ReaderSignal,
)
from gatewayd.kernel.scope import Scope
from gatewayd.rules.arbitration import Decision, Priority
from gatewayd.rules.config import PolicyConfig
from gatewayd.rules.engine import Change
from gatewayd.rules.policy import access_grant, responder_override
from gatewayd.rules.sources import Source
from gatewayd.security.audit import AuditKind
from gatewayd.security.credentials import (
    AccessConfig,
    Credential,
    CredentialRole,
    CredentialStore,
    HoursCheck,
    refusal,
    within_hours,
)
from gatewayd.service.core import Core
from gatewayd.service.expiry import Expiry
from gatewayd.service.scopes import location_of
from gatewayd.service.tasks import Tasks

log = structlog.get_logger(__name__)

#: Digits of a card digest shown in events: enough to tell repeated attempts apart.
CARD_REF_DIGITS = 12


@dataclass(slots=True)
class _WaitingPin:
    """A card that needs its PIN, presented at a reader."""

    credential: Credential
    number: str
    deadline_s: float


class AccessService:
    """Credential decisions at readers, and each reader's steady indication."""

    def __init__(
        self,
        core: Core,
        store: CredentialStore | None,
        *,
        expiry: Expiry,
        tasks: Tasks,
        drivers: Mapping[str, AnyDriver],
        hours: HoursCheck = within_hours,
    ) -> None:
        self._core = core
        self._store = store
        self._expiry = expiry
        self._tasks = tasks
        self._drivers = drivers
        self._hours = hours
        #: Reader device -> the door it is mounted at.
        self.readers: dict[str, str] = {r: d.id for d in core.campus.doors.values()
                                        for r in d.readers}  # fmt: skip
        self._by_door: dict[str, list[str]] = {}
        for reader, door in self.readers.items():
            self._by_door.setdefault(door, []).append(reader)
        self._pins: dict[str, _WaitingPin] = {}
        #: The steady indication each reader should show, and what it showed last.
        self._wanted: dict[str, Indication] = {}
        self._shown: dict[str, Indication] = {}
        self._sending: set[str] = set()
        self._counts = {"granted": 0, "refused": 0}

    def statistics(self) -> dict[str, int]:
        return {**self._counts, "readers": len(self.readers),
                "credentials": len(self._store) if self._store else 0}  # fmt: skip

    # --- credentials ----------------------------------------------------------------------

    def credential(self, event: CredentialRead) -> None:
        """A card or PIN at a reader: decided in a task of its own, never on the pump."""
        if event.device not in self.readers:
            log.warning("access.unmounted_reader", reader=event.device)
            return
        self._tasks.spawn(self._decide(event), f"access:{event.device}")

    async def _decide(self, event: CredentialRead) -> None:
        reader, door = event.device, self.readers[event.device]
        store = self._store
        if store is None:
            await self._refuse(reader, door, "no_credentials", None, None)
            return
        if event.kind == "pin":
            waiting = self._pins.pop(reader, None)
            if waiting is None or time.monotonic() > waiting.deadline_s:
                await self._refuse(reader, door, "pin_without_card", None, None)
                return
            if not store.pin_matches(waiting.credential, waiting.number, event.value):
                await self._refuse(reader, door, "wrong_pin", waiting.credential,
                                   store.digest(waiting.number))  # fmt: skip
                return
            await self._card_ok(reader, door, waiting.credential, store.digest(waiting.number),
                                event.ts_ns)  # fmt: skip
            return
        digest, credential = store.card(event.value)
        if credential is None:
            await self._refuse(reader, door, "unknown", None, digest)
            return
        why = refusal(credential, door, datetime.now(store.zone), self._hours)
        if why is not None:
            await self._refuse(reader, door, why, credential, digest)
            return
        if credential.pin is not None:
            deadline_s = time.monotonic() + store.config.pin_timeout_s
            self._pins[reader] = _WaitingPin(credential, event.value, deadline_s)
            self._flash(reader, Indication.PIN_WANTED)
            return
        await self._card_ok(reader, door, credential, digest, event.ts_ns)

    async def _card_ok(
        self, reader: str, door: str, credential: Credential, digest: str, read_ns: int
    ) -> None:
        core = self._core
        assert self._store is not None
        decision = core.engine.decide(door)
        now = time.time()
        source = card_grant(decision, credential, door, now=now, access=self._store.config,
                            policy=core.policy)  # fmt: skip
        if isinstance(source, str):
            await self._refuse(reader, door, source, credential, digest)
            return
        actor = source.actor
        assert source.expires_at is not None
        duration_s = source.expires_at - now
        data = {**self._about(reader, door, credential, digest), "outcome": "granted",
                "unlock_s": duration_s, "until": now + duration_s,
                "during": decision.reason}  # fmt: skip
        try:
            doors = await core.commit(Change(put=(source,)), kind=AuditKind.ACCESS, actor=actor,
                                      data=data)  # fmt: skip
        except CommandError as exc:
            await self._refuse(reader, door, exc.code, credential, digest)
            return
        self._expiry.changed()
        self._flash(reader, Indication.GRANTED)
        report = await core.actuator.apply(doors, read_ns)
        core.reporting.record(report, trigger=f"credential {credential.id} at {door}")
        self._counts["granted"] += 1
        log.warning("access.granted", reader=reader, door=door, credential=credential.id,
                    role=str(credential.role), unlock_s=duration_s, during=decision.reason,
                    **{f"{k}_ms": v for k, v in report.latencies_ms().items()})  # fmt: skip
        core.publisher.event("access", reader, {**data, "confirmed": not report.failed},
                             life_safety=True,
                             location=location_of(core.campus, source.scope))  # fmt: skip

    async def _refuse(
        self, reader: str, door: str, why: str, credential: Credential | None, digest: str | None
    ) -> None:
        core = self._core
        data = {**self._about(reader, door, credential, digest), "outcome": "refused",
                "reason": why}  # fmt: skip
        self._counts["refused"] += 1
        self._flash(reader, Indication.REFUSED)
        log.warning("access.refused", reader=reader, door=door, reason=why,
                    credential=credential.id if credential else None)  # fmt: skip
        core.guard.record(AuditKind.ACCESS, f"reader:{reader}", data)
        core.publisher.event("access", reader, data, life_safety=False,
                             location=location_of(core.campus, Scope("door", door)))  # fmt: skip

    @staticmethod
    def _about(
        reader: str, door: str, credential: Credential | None, digest: str | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"reader": reader, "door": door}
        if digest is not None:
            out["card_ref"] = digest[:CARD_REF_DIGITS]
        if credential is not None:
            out.update(credential=credential.id, holder=credential.holder,
                       role=str(credential.role))  # fmt: skip
        return out

    # --- reader reports -------------------------------------------------------------------

    def report(self, event: ReaderReport) -> None:
        """Tamper and power: a device event, loud when the cover opens or the power fails."""
        door = self.readers.get(event.device)
        log.warning("reader.report", reader=event.device, report=event.report,
                    active=event.active)  # fmt: skip
        location = location_of(self._core.campus, Scope("door", door)) if door else {}
        self._core.publisher.event("device", event.device,
                                   {"reader": event.report, "active": event.active,
                                    "door": door},
                                   life_safety=event.active, location=location)  # fmt: skip

    # --- what readers show ----------------------------------------------------------------

    def door_changed(self, state: DoorState) -> None:
        """The door table moved: each of its readers should show the door's state."""
        for reader in self._by_door.get(state.id, ()):
            self._want(reader, indication_of(state))

    def reader_health(self, event: DeviceHealth) -> None:
        """A reader back online shows the door's state again (it forgot it)."""
        if event.device in self.readers and event.health is not Health.OFFLINE:
            self._shown.pop(event.device, None)
            self._want(event.device, self._wanted.get(event.device, Indication.IDLE))

    def _want(self, reader: str, indication: Indication) -> None:
        self._wanted[reader] = indication
        if self._shown.get(reader) != indication and reader not in self._sending:
            self._sending.add(reader)
            self._tasks.spawn(self._show(reader), f"reader-led:{reader}")

    async def _show(self, reader: str) -> None:
        """Send the wanted indication until the reader shows the latest one (or is away)."""
        try:
            while (wanted := self._wanted[reader]) != self._shown.get(reader):
                try:
                    await self._drivers[reader].execute(ReaderSignal(wanted))
                except DeviceError as exc:
                    # Offline: it is shown when the reader comes back (reader_health).
                    log.info("reader.signal_failed", reader=reader, error=str(exc))
                    return
                self._shown[reader] = wanted
        finally:
            self._sending.discard(reader)

    def _flash(self, reader: str, indication: Indication) -> None:
        self._tasks.spawn(self._brief(reader, indication), f"reader-flash:{reader}")

    async def _brief(self, reader: str, indication: Indication) -> None:
        try:
            await self._drivers[reader].execute(ReaderSignal(indication))
        except DeviceError as exc:
            log.info("reader.signal_failed", reader=reader, error=str(exc))


def card_grant(
    decision: Decision,
    credential: Credential,
    door: str,
    *,
    now: float,
    access: AccessConfig,
    policy: PolicyConfig,
) -> Source | str:
    """The source a valid credential puts on its door, or why it is refused (``lockdown``).

    ``decision`` is what holds the door now. A door the lockdown family holds locked opens
    only for a responder, by the responder override (at most ``responder_max_s``); otherwise
    a momentary unlock below every SRP state and fire alarm.
    """
    claim = decision.claim
    held = claim is not None and claim.locked and claim.priority <= Priority.LOCKDOWN
    scope = Scope("door", door)
    actor = f"credential:{credential.id}"
    if held:
        if credential.role is not CredentialRole.RESPONDER:
            # The one rule of this service: a lockdown opens only for responders.
            return "lockdown"
        duration_s = min(access.responder_unlock_s, policy.responder_max_s)
        return responder_override(scope, actor=actor, since=now, until=now + duration_s)
    return access_grant(scope, actor=actor, since=now, until=now + access.staff_unlock_s)


def indication_of(state: DoorState) -> Indication:
    """The steady indication of a door: fault, responder, lockdown or idle."""
    if state.fault or not state.device_online:
        return Indication.FAULT
    if state.reason.startswith("responder"):
        return Indication.RESPONDER
    if state.commanded and state.priority <= Priority.LOCKDOWN:
        return Indication.LOCKDOWN
    return Indication.IDLE
