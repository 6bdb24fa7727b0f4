"""Change-of-value subscriptions of one controller: made, renewed, dropped and recreated.

One subscriber process id per driver; each watched point is its own subscription (BACnet
subscriptions are per object). Notifications arrive on the shared application and reach us
through the listener registered under (controller address, process id).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from bacpypes3.basetypes import PropertyIdentifier
from bacpypes3.constructeddata import Any as AnyValue
from bacpypes3.primitivedata import ObjectIdentifier
from structlog.typing import FilteringBoundLogger

from gatewayd.drivers.bacnet.points import Point
from gatewayd.drivers.bacnet.transport import (
    PRESENT_VALUE,
    BacnetLink,
    DeviceRefused,
    GatewayApplication,
    concurrently,
)
from gatewayd.kernel.errors import DeviceError

#: Renew when this fraction of the lifetime has passed (well before it lapses).
RENEW_AT = 0.5

OnValue = Callable[[Point, AnyValue], None]


def object_id(point: Point) -> ObjectIdentifier:
    return ObjectIdentifier(f"{point.kind},{point.instance}")


class CovBook:
    """Which points have a live subscription, which the device refused, and renewal times."""

    def __init__(
        self, link: BacnetLink, lifetime_s: int, on_value: OnValue, log: FilteringBoundLogger
    ) -> None:
        self._link = link
        self._log = log
        self._lifetime_s = lifetime_s
        self._on_value = on_value
        self._process_id = 0
        self._app: GatewayApplication | None = None
        self._by_object: dict[ObjectIdentifier, Point] = {}
        #: Point -> monotonic time at which its subscription is due for renewal.
        self.active: dict[Point, float] = {}
        #: Points whose device answered SubscribeCOV with an error: polled instead.
        self.refused: set[Point] = set()
        self.subscribes = 0
        self.renewals = 0
        self.notifications = 0

    def attach(self, app: GatewayApplication) -> None:
        """Register our listener on the shared application (once per driver run)."""
        self._app = app
        self._process_id = app.new_process_id()
        app.cov_listeners[(self._link.address, self._process_id)] = self._notified

    def detach(self) -> None:
        if self._app is not None:
            self._app.cov_listeners.pop((self._link.address, self._process_id), None)
        self._app = None
        self.forget()

    def forget(self) -> None:
        """The device lost our subscriptions (restart, power loss): recreate them all."""
        self.active.clear()
        self.refused.clear()

    def covers(self, points: Iterable[Point]) -> bool:
        return all(p in self.active for p in points)

    def _notified(self, objid: ObjectIdentifier, prop: PropertyIdentifier, value: AnyValue) -> None:
        point = self._by_object.get(objid)
        if point is None or prop != PRESENT_VALUE:
            return
        self.notifications += 1
        self._on_value(point, value)

    async def subscribe(self, points: Iterable[Point]) -> None:
        """Subscribe every point not yet covered; a device refusal means polling for it."""
        wanted = [p for p in points if p not in self.active and p not in self.refused]
        if not wanted or self._app is None:
            return
        await concurrently(self._subscribe_one(p) for p in wanted)

    async def _subscribe_one(self, point: Point) -> None:
        objid = object_id(point)
        self._by_object[objid] = point
        try:
            await self._link.subscribe(objid, self._process_id, self._lifetime_s)
        except DeviceRefused as exc:
            self.refused.add(point)
            self._log.info("bacnet.cov_refused", point=str(point), reason=exc.reason)
            return
        renewing = point in self.active
        self.active[point] = time.monotonic() + self._lifetime_s * RENEW_AT
        if renewing:
            self.renewals += 1
        else:
            self.subscribes += 1

    async def renew_due(self) -> None:
        """Renew every subscription whose renewal time has come."""
        now = time.monotonic()
        due = [p for p, at in self.active.items() if at <= now]
        await concurrently(self._subscribe_one(p) for p in due)

    def resubscribe(self, point: Point) -> None:
        """Mark one subscription lost (a change it should have reported came by poll)."""
        self.active.pop(point, None)

    async def cancel_all(self, timeout_s: float) -> None:
        """Best effort: tell the device to stop notifying (it also lapses by lifetime)."""
        points, self.active = list(self.active), {}
        if not points:
            return
        cancels = (self._link.subscribe(object_id(p), self._process_id, None) for p in points)
        try:
            async with asyncio.timeout(timeout_s):
                await concurrently(cancels)
        except (TimeoutError, DeviceError) as exc:
            self._log.info("bacnet.cov_cancel_incomplete", error=str(exc))
