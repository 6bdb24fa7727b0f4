"""Air handlers on a simulated BACnet controller: a supply fan and an outside-air damper each.

Unit ``j`` of a controller has, from instance :data:`AIR_BASE`:

- ``binary-output,AIR_BASE+2j``: fan command (active = run), a real priority array whose
  relinquish default is *active*: with no command the building's own schedule runs the fan;
- ``binary-output,AIR_BASE+2j+1``: outside-air damper command (active = open), default open;
- ``binary-input,AIR_BASE+2j``: fan status (a current switch), following the command after
  ``fan_delay_ms`` (a fan spins down, it does not stop at once);
- ``binary-input,AIR_BASE+2j+1``: damper end switch (active = open), following after
  ``damper_delay_ms`` (the actuator's stroke).

Status inputs are local bacpypes3 objects, so COV subscriptions see them change.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

from bacpypes3.local.binary import BinaryInputObject, BinaryOutputObject
from bacpypes3.primitivedata import Null

#: First object instance of the air handlers (doors use the low instances).
AIR_BASE = 1000
_HEALTHY = {"statusFlags": [0, 0, 0, 0], "eventState": "normal", "outOfService": False,
            "polarity": "normal"}  # fmt: skip


class AirWrite(NamedTuple):
    """One write to an air output's present-value (value None = relinquish)."""

    ns: int
    instance: int
    value: bool | None
    priority: int


class _AirOutput(BinaryOutputObject):  # type: ignore[misc]
    """A fan or damper command that tells its units when the priority array resolves."""

    async def write_property(
        self, attr: Any, value: Any, index: Any = None, priority: Any = None
    ) -> None:
        units = self.__dict__.get("_units")
        if units is not None and str(attr) in ("presentValue", "present-value", "85"):
            bit = None if isinstance(value, Null) else bool(int(value))
            units.writes.append(AirWrite(time.monotonic_ns(), int(self.objectIdentifier[1]),
                                         bit, int(priority or 16)))  # fmt: skip
        await super().write_property(attr, value, index, priority)

    def recalculating(self) -> None:
        super().recalculating()
        units = self.__dict__.get("_units")
        if units is not None:
            units.commanded(self)


class AirHandlers:
    """``count`` air handlers: their objects, and status that follows command with a delay."""

    def __init__(self, count: int, *, fan_delay_ms: float = 300.0,
                 damper_delay_ms: float = 200.0) -> None:  # fmt: skip
        if not 0 <= count <= 100:
            raise ValueError(f"air handlers must be 0..100, got {count}")
        self.count = count
        self.fan_delay_s = fan_delay_ms / 1000
        self.damper_delay_s = damper_delay_ms / 1000
        #: Every network write to an air output, in order.
        self.writes: list[AirWrite] = []
        self._outputs: dict[int, _AirOutput] = {}
        self._status: dict[int, BinaryInputObject] = {}
        #: The state each status input shows (kept across a controller restart).
        self._shown = {AIR_BASE + i: True for i in range(2 * count)}
        self._pending: dict[int, asyncio.TimerHandle] = {}
        #: Fault: units whose fan keeps running and damper stays open whatever the command
        #: (a burnt contactor, a seized actuator); their status no longer follows.
        self.stuck: set[int] = set()

    def objects(self) -> list[Any]:
        """Fresh bacpypes3 objects carrying the previous ones' priority arrays and status."""
        old = self._outputs
        self._outputs, self._status = {}, {}
        for instance in sorted(self._shown):
            kwargs: dict[str, Any] = {}
            if instance in old:
                kwargs = {"priorityArray": list(old[instance].priorityArray),
                          "presentValue": old[instance].presentValue}  # fmt: skip
            kind = "fan" if (instance - AIR_BASE) % 2 == 0 else "damper"
            unit = (instance - AIR_BASE) // 2
            output = _AirOutput(
                objectIdentifier=("binary-output", instance),
                objectName=f"ahu-{unit}-{kind}-command",
                relinquishDefault="active",
                **({"presentValue": "active"} | _HEALTHY | kwargs),
            )
            output.__dict__["_units"] = self
            self._outputs[instance] = output
            self._status[instance] = BinaryInputObject(
                objectIdentifier=("binary-input", instance),
                objectName=f"ahu-{unit}-{kind}-status",
                presentValue="active" if self._shown[instance] else "inactive",
                **_HEALTHY,
            )
        return [*self._outputs.values(), *self._status.values()]

    def commanded(self, output: Any) -> None:
        """An output resolved to a new value: its status input follows after the delay."""
        instance = int(output.objectIdentifier[1])
        value = int(output.presentValue) == 1
        if (instance - AIR_BASE) // 2 in self.stuck:
            return
        pending = self._pending.pop(instance, None)
        if pending is not None:
            pending.cancel()
        fan = (instance - AIR_BASE) % 2 == 0
        delay_s = self.fan_delay_s if fan else self.damper_delay_s
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._show(instance, value)
            return
        self._pending[instance] = loop.call_later(delay_s, self._show, instance, value)

    def _show(self, instance: int, value: bool) -> None:
        self._pending.pop(instance, None)
        self._shown[instance] = value
        status = self._status.get(instance)
        if status is not None:
            # Setting presentValue on a local object runs bacpypes3's COV detection.
            status.presentValue = "active" if value else "inactive"

    def cancel(self) -> None:
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()

    # --- what tests read ------------------------------------------------------------------

    def running(self, unit: int) -> bool:
        """The fan's status input: True while it runs."""
        return self._shown[AIR_BASE + 2 * unit]

    def damper_open(self, unit: int) -> bool:
        return self._shown[AIR_BASE + 2 * unit + 1]

    def priority_array(self, instance: int) -> dict[int, bool]:
        """Occupied slots of an air output's priority array: priority -> value."""
        out = {}
        for i, slot in enumerate(self._outputs[instance].priorityArray):
            if slot.null is None:
                out[i + 1] = int(getattr(slot, slot._choice)) == 1
        return out
