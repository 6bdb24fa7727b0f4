"""Rule actions onto devices: PSAP radio alerts and camera snapshots.

Devices are chosen by what their driver can do (``Driver.commands``), never by driver name:
a radio alert goes to the rule's target devices, else to every device that takes a
``SendAlert``; a snapshot goes to the rule's cameras, else to every camera in the event's
building. Outcomes are published as ``radio`` and ``camera`` events.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from gatewayd.kernel.driver import AnyDriver
from gatewayd.kernel.errors import DeviceError
from gatewayd.kernel.events import DeviceCommand, SendAlert, TakeSnapshot
from gatewayd.rules.actions import ExternalAction

log = structlog.get_logger(__name__)


class Publish(Protocol):
    """How the dispatcher reports an outcome as an event."""

    def __call__(
        self,
        kind: str,
        source: str,
        data: Mapping[str, Any],
        *,
        life_safety: bool,
        location: Mapping[str, Any],
        drill: bool,
    ) -> None: ...


#: The radio's status word: capitals, digits and spaces, short.
_STATUS = re.compile(r"[^A-Z0-9 ]+")


def status_word(text: str) -> str:
    """``LOCKDOWN`` from ``lockdown, Building A, ...``: the first phrase, radio-safe."""
    head = re.split(r"[,:]", text, maxsplit=1)[0].upper()
    return _STATUS.sub("", head).strip()[:24] or "ALERT"


class DeviceSink:
    """Implements :class:`rules.actions.ActionSink` over the campus's drivers."""

    def __init__(self, drivers: Mapping[str, AnyDriver], publish: Publish) -> None:
        self._drivers = drivers
        self._publish = publish

    def able(self, command: type) -> list[str]:
        return [d for d, drv in self._drivers.items() if command in type(drv).commands]

    async def dispatch(self, action: ExternalAction) -> None:
        match action.kind:
            case "radio_alert":
                targets = list(action.targets) or self.able(SendAlert)
                command: DeviceCommand = SendAlert(
                    status_word(action.text), action.text, drill=action.drill
                )
                kind = "radio"
            case "snapshot":
                cameras = self.able(TakeSnapshot)
                building = action.location.get("building")
                targets = list(action.targets) or [
                    c
                    for c in cameras
                    if building is None or self._drivers[c].config.building in (None, building)
                ]
                command = TakeSnapshot(reason=action.rule)
                kind = "camera"
            case _:
                log.error("action.unknown", kind=action.kind, rule=action.rule)
                return
        if not targets:
            log.warning("action.no_device", kind=action.kind, rule=action.rule)
            return
        await asyncio.gather(*(self._run(t, command, kind, action) for t in targets))

    async def _run(
        self, device: str, command: DeviceCommand, kind: str, action: ExternalAction
    ) -> None:
        driver = self._drivers.get(device)
        data: dict[str, Any] = {"rule": action.rule, "command": type(command).__name__}
        if driver is None:
            data.update(ok=False, error="unknown_device")
        else:
            try:
                result = await driver.execute(command)
                data.update(ok=True, **result.detail)
            except DeviceError as exc:
                data.update(ok=False, error=exc.code, message=str(exc))
        log.info("action.done", device=device, kind=kind, drill=action.drill, result=data)
        self._publish(
            kind, device, data, life_safety=True, location=action.location, drill=action.drill
        )
