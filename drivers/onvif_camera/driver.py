"""The ONVIF camera driver: pull-point events, snapshots on request, PTZ presets, health.

One session per connection: connect, subscribe, pull in a loop and renew at ~80% of the
subscription's life. A SOAP fault or garbage on the subscription (the camera dropped it, or
rebooted between two pulls) recreates the subscription with backoff; a connection error or a
timeout ends the session and reconnects from scratch with backoff; a refused password is
reported once and retried only at the slowest backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Mapping

import structlog

from gatewayd.drivers.onvif_camera.client import CameraAuthError, CameraClient, CameraFault
from gatewayd.drivers.onvif_camera.config import OnvifCameraConfig
from gatewayd.drivers.onvif_camera.events import Notification, UnreadableEvent, to_camera_event
from gatewayd.drivers.onvif_camera.snapshots import BadImage, SnapshotStore
from gatewayd.kernel.backoff import BackoffTimer
from gatewayd.kernel.driver import Driver, Emit, Startup
from gatewayd.kernel.errors import (
    BadDeviceReply,
    BadPoint,
    DeviceError,
    DeviceOffline,
    UnsupportedCommand,
)
from gatewayd.kernel.events import (
    CommandResult,
    DeviceFault,
    GotoPreset,
    TakeSnapshot,
)
from gatewayd.kernel.health import LinkHealth

log = structlog.get_logger(__name__)

#: Renew when this share of the subscription's life has passed.
RENEW_AT = 0.8
#: Subscription failures in a row before the camera is reported degraded.
DEGRADED_AFTER = 3
#: A lost subscription is remade this much sooner than a lost connection: the session is fine.
RESUBSCRIBE_SOONER = 5


class OnvifCameraDriver(Driver[OnvifCameraConfig]):
    """Reports a camera's motion, tamper and digital-input events; takes snapshots; moves PTZ."""

    config_model = OnvifCameraConfig
    commands = (TakeSnapshot, GotoPreset)

    def __init__(self, config: OnvifCameraConfig, points: frozenset[str], emit: Emit) -> None:
        super().__init__(config, points, emit)
        self._store = SnapshotStore(
            config.snapshot_dir / config.id,
            int(config.snapshot_max_mb * 1024 * 1024),
            config.thumbnail_px,
        )
        self._client: CameraClient | None = None
        self._log = log.bind(device=config.id)
        # Sessions fail offline at once; lost subscriptions degrade after a few in a row.
        self._link_health = LinkHealth(
            self._set_health, self._log, "onvif", degraded_after=DEGRADED_AFTER
        )
        backoff = config.reconnect_backoff
        self._reconnect = BackoffTimer(backoff)
        self._resubscribe = BackoffTimer(
            dataclasses.replace(backoff, min_s=backoff.min_s / RESUBSCRIBE_SOONER)
        )
        self._counts: Counter[str] = Counter()
        self._last_snapshot_ms = 0.0

    @classmethod
    def parse_point(cls, raw: str) -> str:
        raise BadPoint(f"{raw!r}: a camera has no binary points (it reports camera events)")

    # --- run loop -------------------------------------------------------------------------

    async def run(self, started: Callable[[], None]) -> None:
        """Sessions until cancelled, with backoff between them."""
        startup = Startup(started)
        try:
            while True:
                await self._session(startup)
                await asyncio.sleep(self._reconnect.next_s())
        finally:
            self._link_health.stopped()

    async def _session(self, startup: Startup) -> None:
        """Connect and pull events until the connection fails; never raises a DeviceError."""
        client = CameraClient(self.config)
        try:
            info = await startup.attempt(client.connect())
            self._counts["connects"] += 1
            self._client = client
            self._log.info(
                "onvif.connected",
                host=self.config.host,
                model=info.model,
                firmware=info.firmware,
                ptz=client.has_ptz,
            )
            self._link_health.succeeded()
            await self._pull_forever(client)
        except CameraAuthError as exc:
            # A wrong password will not fix itself in a second: no tight loop.
            self._reconnect.slowest()
            self._offline(exc)
        except DeviceError as exc:
            self._offline(exc)
        finally:
            self._client = None
            await client.close()

    async def _pull_forever(self, client: CameraClient) -> None:
        """Subscribe and pull; recreate a lost subscription; connection errors propagate."""
        while True:
            try:
                await self._subscription(client)
            except (CameraFault, BadDeviceReply) as exc:
                self._counts["subscriptions_lost"] += 1
                if isinstance(exc, BadDeviceReply):
                    self._fault(exc)
                self._link_health.failed(str(exc))
                self._log.warning(
                    "onvif.subscription_lost", error=str(exc), failures=self._link_health.failures
                )
                await asyncio.sleep(self._resubscribe.next_s())

    async def _subscription(self, client: CameraClient) -> None:
        """One subscription's life: pull until it fails, renewing at ~80% of its term."""
        config = self.config
        loop = asyncio.get_running_loop()
        life_s = await client.subscribe(config.subscription_s)
        self._counts["subscriptions"] += 1
        renew_at = loop.time() + life_s * RENEW_AT
        try:
            while True:
                left_s = renew_at - loop.time()
                if left_s <= 0.05:
                    life_s = await client.renew(config.subscription_s)
                    self._counts["renewals"] += 1
                    renew_at = loop.time() + life_s * RENEW_AT
                    continue
                notes = await client.pull(min(config.pull_timeout_s, left_s))
                self._counts["pulls"] += 1
                self._reconnect.reset()
                self._resubscribe.reset()
                self._link_health.succeeded()
                for note in notes:
                    self._on_notification(note)
        except asyncio.CancelledError:
            # Stopping: tell the camera, within a short deadline, then go on stopping.
            try:
                await client.unsubscribe()
            except DeviceError as exc:
                self._log.debug("onvif.unsubscribe_failed", error=str(exc))
            raise

    def _on_notification(self, note: Notification) -> None:
        try:
            event = to_camera_event(self.device_id, note)
        except UnreadableEvent as exc:
            self._counts["unreadable_events"] += 1
            self._fault(BadDeviceReply(str(exc)))
            return
        if event is None:
            self._counts["unknown_topics"] += 1
            self._log.debug("onvif.topic_ignored", topic=note.topic)
            return
        if note.operation == "Deleted" or (note.operation == "Initialized" and not event.active):
            # The state at subscription time with nothing going on, or a property that went
            # away: nothing happened. An Initialized *active* state is news: it is on now.
            self._counts["initial_states"] += 1
            return
        self._counts["events"] += 1
        self._emit(event)

    # --- health ---------------------------------------------------------------------------

    def _offline(self, exc: DeviceError) -> None:
        """Report a failed session; a changed reason is reported even if already offline."""
        if isinstance(exc, BadDeviceReply):
            self._fault(exc)
        self._link_health.offline(str(exc))

    @property
    def _last_error(self) -> str:
        return self._link_health.last_error or "not connected yet"

    def _fault(self, exc: DeviceError) -> None:
        self._counts["faults"] += 1
        self._emit(DeviceFault(self.device_id, exc.code, str(exc)))

    # --- commands -------------------------------------------------------------------------

    async def _execute(self, command: TakeSnapshot | GotoPreset) -> CommandResult:
        """Take a snapshot or move to a PTZ preset."""
        match command:
            case TakeSnapshot():
                return await self._snapshot(command)
            case GotoPreset():
                return await self._goto(command)

    def _connected(self) -> CameraClient:
        if self._client is None:
            raise DeviceOffline(f"{self.device_id}: camera not connected ({self._last_error})")
        return self._client

    async def _snapshot(self, command: TakeSnapshot) -> CommandResult:
        client = self._connected()
        self._counts["snapshots_requested"] += 1
        on_wire_ns = time.monotonic_ns()
        try:
            jpeg = await client.snapshot()
            # Decoding, resizing and disk writes block: keep them off the event loop.
            stored = await asyncio.to_thread(self._store.store, jpeg)
        except BadImage as exc:
            error = BadDeviceReply(f"{self.device_id}: {exc}")
            self._counts["snapshot_failures"] += 1
            self._fault(error)
            raise error from exc
        except OSError as exc:
            self._counts["snapshot_failures"] += 1
            raise DeviceError(f"{self.device_id}: cannot store snapshot: {exc}") from exc
        except DeviceError as exc:
            self._counts["snapshot_failures"] += 1
            if isinstance(exc, BadDeviceReply):
                self._fault(exc)
            raise
        done_ns = time.monotonic_ns()
        self._counts["snapshots"] += 1
        self._last_snapshot_ms = (done_ns - on_wire_ns) / 1e6
        self._log.info(
            "onvif.snapshot",
            reason=command.reason,
            path=str(stored.path),
            width=stored.width,
            height=stored.height,
            ms=round(self._last_snapshot_ms, 1),
        )
        detail = {
            "path": str(stored.path),
            "thumbnail": str(stored.thumbnail),
            "width": str(stored.width),
            "height": str(stored.height),
        }
        return CommandResult((), on_wire_ns, done_ns, detail)

    async def _goto(self, command: GotoPreset) -> CommandResult:
        client = self._connected()
        if not client.has_ptz:
            raise UnsupportedCommand(f"{self.device_id}: camera has no PTZ service")
        token = self.config.ptz_presets.get(command.preset)
        if token is None:
            presets = await client.presets()
            token = presets.get(command.preset)
            if token is None and command.preset in presets.values():
                token = command.preset
            if token is None:
                raise DeviceError(
                    f"{self.device_id}: no PTZ preset {command.preset!r}"
                    f" (camera has {sorted(presets)})"
                )
        on_wire_ns = await client.goto_preset(token)
        self._counts["presets"] += 1
        self._log.info("onvif.goto_preset", preset=command.preset, token=token)
        return CommandResult(
            (), on_wire_ns, time.monotonic_ns(), {"preset": command.preset, "token": token}
        )

    # --- statistics -----------------------------------------------------------------------

    def statistics(self) -> Mapping[str, int | float | str]:
        """Session, subscription, event and snapshot counters."""
        client = self._client
        return {
            **{
                k: self._counts[k]
                for k in (
                    "connects",
                    "subscriptions",
                    "subscriptions_lost",
                    "renewals",
                    "pulls",
                    "events",
                    "unknown_topics",
                    "initial_states",
                    "unreadable_events",
                    "faults",
                    "snapshots_requested",
                    "snapshots",
                    "snapshot_failures",
                    "presets",
                )
            },
            "snapshots_deleted": self._store.deleted,
            "last_snapshot_ms": round(self._last_snapshot_ms, 3),
            "requests": client.requests if client else 0,
            "last_rtt_ms": round(client.last_rtt_ms, 3) if client else 0.0,
            "health": str(self.health),
            "last_error": self._last_error,
        }
