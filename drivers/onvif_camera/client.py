"""One camera session through onvif-zeep-async: deadlines, and library errors made ours.

The library's ``PullPointManager`` is not used: it renews from loop timers in fire-and-forget
tasks, waits at least 48 s before a renewal and 40 s before a restart, and swallows the
errors. The driver owns the subscription's life in its own task instead; this module only
makes the calls. Library exceptions never leave this module.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from gatewayd.drivers.onvif_camera.config import OnvifCameraConfig
from gatewayd.drivers.onvif_camera.events import Notification
from gatewayd.kernel.errors import (
    BadDeviceReply,
    DeviceError,
    DeviceOffline,
    DeviceTimeout,
    ErrorCode,
)

# Importing onvif calls logging.basicConfig(level=INFO), which would install a root handler
# (and level) in whatever process loads this driver; gatewayd logs through structlog and a
# driver must not change the host's logging. Keep the root logger as it was.
_root = logging.getLogger()
_root_handlers, _root_level = list(_root.handlers), _root.level
import zeep.exceptions  # noqa: E402
from onvif import ONVIFCamera, ONVIFService  # noqa: E402
from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError  # noqa: E402

_root.handlers[:] = _root_handlers
_root.setLevel(_root_level)

T = TypeVar("T")
PULLPOINT_NS = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription"
PTZ_NS = "http://www.onvif.org/ver20/ptz/wsdl"
#: Messages asked per PullMessages.
MESSAGE_LIMIT = 64
_PROXY_VARS = ("http_proxy", "https_proxy")


class CameraAuthError(DeviceError):
    """The camera refused our username or password."""

    code: str = ErrorCode.DEVICE_AUTH_REFUSED


class CameraFault(DeviceError):
    """The camera answered with a SOAP fault (e.g. it no longer knows our subscription)."""

    code: str = ErrorCode.DEVICE_FAULT


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    manufacturer: str
    model: str
    firmware: str
    serial: str


def translate(exc: BaseException, what: str) -> DeviceError:
    """Our error for a library, HTTP or SOAP failure during ``what``."""
    if isinstance(exc, ONVIFError) and not isinstance(exc, ONVIFTimeoutError | ONVIFAuthError):
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, ONVIFError):
            return translate(cause, what)
    match exc:
        case ONVIFAuthError():
            return CameraAuthError("camera refused the credentials")
        case zeep.exceptions.Fault() if _is_auth_fault(exc):
            return CameraAuthError("camera refused the credentials")
        case zeep.exceptions.Fault():
            return CameraFault(f"{what}: camera refused: {exc.message}")
        case zeep.exceptions.TransportError() if exc.status_code == 401:
            return CameraAuthError("camera refused the credentials")
        case TimeoutError() | ONVIFTimeoutError():
            return DeviceTimeout(f"{what}: no answer in time")
        case aiohttp.ClientConnectionError() | OSError():
            return DeviceOffline(f"{what}: {type(exc).__name__}: {exc}")
    return BadDeviceReply(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")


def _is_auth_fault(fault: zeep.exceptions.Fault) -> bool:
    words = [str(fault.message), str(fault.code), *(str(s) for s in fault.subcodes or ())]
    return any("NotAuthorized" in w for w in words)


#: What a library call can raise that we translate (anything else is a bug of ours).
_LIBRARY_ERRORS = (
    TimeoutError,
    zeep.exceptions.Error,
    ONVIFError,
    aiohttp.ClientError,
    OSError,
    AttributeError,
    TypeError,
    ValueError,
    IndexError,
)


class CameraClient:
    """A connection to one camera; every method raises a DeviceError subclass on failure."""

    def __init__(self, config: OnvifCameraConfig) -> None:
        self.config = config
        self._timeout_s = config.timeout_s
        # The constructor deletes proxy variables from the process environment (a library
        # global mutation); put them back. Its sessions ignore the environment anyway.
        saved = {k: os.environ[k] for k in _PROXY_VARS if k in os.environ}
        # adjust_time: an unauthenticated GetSystemDateAndTime first, so a camera whose clock
        # is off still accepts our WS-Security timestamps. no_cache: no shared SQLite file.
        self._camera = ONVIFCamera(
            config.host,
            config.port,
            config.username,
            config.password.get_secret_value(),
            no_cache=True,
            adjust_time=True,
        )
        os.environ.update(saved)
        self._profile = ""
        self._pullpoint: ONVIFService | None = None
        self._subscription: ONVIFService | None = None
        self._presets: dict[str, str] | None = None
        #: Requests made and failed, for statistics.
        self.requests = 0
        self.failures = 0
        self.last_rtt_ms = 0.0

    @property
    def has_ptz(self) -> bool:
        return PTZ_NS in self._camera.xaddrs

    @property
    def profile(self) -> str:
        return self._profile

    async def close(self) -> None:
        """Close every HTTP session the library opened; safe to call twice."""
        await self._camera.close()

    async def _call(
        self, what: str, make: Callable[[], Awaitable[T]], timeout_s: float | None = None
    ) -> T:
        self.requests += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s or self._timeout_s):
                result = await make()
        except _LIBRARY_ERRORS as exc:
            self.failures += 1
            raise translate(exc, what) from exc
        self.last_rtt_ms = (time.monotonic() - started) * 1000
        return result

    # --- session ------------------------------------------------------------------------

    async def connect(self) -> DeviceInfo:
        """Clock, service addresses, device information and the media profile."""
        camera = self._camera
        # update_xaddrs: GetSystemDateAndTime (adjust_time), then GetServices or
        # GetCapabilities; a wrong password shows up here.
        await self._call("update_xaddrs", camera.update_xaddrs, self._timeout_s * 3)
        device = await self._call("device service", camera.create_devicemgmt_service)
        info: Any = await self._call("GetDeviceInformation", device.GetDeviceInformation)
        media = await self._call("media service", camera.create_media_service)
        profiles: Any = await self._call("GetProfiles", media.GetProfiles)
        tokens = [str(p.token) for p in profiles or ()]
        if not tokens:
            raise BadDeviceReply("camera has no media profile")
        wanted = self.config.profile
        if wanted is not None and wanted not in tokens:
            raise DeviceError(f"camera has no media profile {wanted!r} (it has {tokens})")
        self._profile = wanted or tokens[0]
        return DeviceInfo(
            str(info.Manufacturer),
            str(info.Model),
            str(info.FirmwareVersion),
            str(info.SerialNumber),
        )

    # --- events ---------------------------------------------------------------------------

    async def subscribe(self, seconds: float) -> float:
        """Create a pull-point subscription; return its lifetime in seconds."""
        camera = self._camera
        events = await self._call("events service", camera.create_events_service)
        result: Any = await self._call(
            "CreatePullPointSubscription",
            lambda: events.CreatePullPointSubscription(
                {"InitialTerminationTime": _duration(seconds)}
            ),
        )
        address = str(result.SubscriptionReference.Address._value_1)
        # The library builds the subscription's services from this xaddr (as its own
        # PullPointManager does).
        camera.xaddrs[PULLPOINT_NS] = address
        self._pullpoint = await self._call("pullpoint", camera.create_pullpoint_service)
        self._subscription = await self._call(
            "subscription", lambda: camera.create_subscription_service("PullPointSubscription")
        )
        return _lifetime_s(result, seconds)

    async def pull(self, wait_s: float) -> list[Notification]:
        """One PullMessages long poll of up to ``wait_s``."""
        service = self._pullpoint
        if service is None:
            raise DeviceError("no subscription")
        reply: Any = await self._call(
            "PullMessages",
            lambda: service.PullMessages(
                {"Timeout": dt.timedelta(seconds=wait_s), "MessageLimit": MESSAGE_LIMIT}
            ),
            wait_s + self._timeout_s,
        )
        try:
            return [_notification(m) for m in reply.NotificationMessage or ()]
        except (AttributeError, TypeError) as exc:
            raise BadDeviceReply(f"PullMessages: unreadable message: {exc}") from exc

    async def renew(self, seconds: float) -> float:
        """Renew the subscription; return its new lifetime in seconds."""
        service = self._subscription
        if service is None:
            raise DeviceError("no subscription")
        result: Any = await self._call(
            "Renew", lambda: service.Renew({"TerminationTime": _duration(seconds)})
        )
        return _lifetime_s(result, seconds)

    async def unsubscribe(self) -> None:
        """End the subscription (a courtesy: it lapses on its own anyway)."""
        service, self._subscription, self._pullpoint = self._subscription, None, None
        if service is not None:
            await self._call("Unsubscribe", service.Unsubscribe, min(1.0, self._timeout_s))

    # --- commands -------------------------------------------------------------------------

    async def snapshot(self) -> bytes:
        """GetSnapshotUri (once per session) and the image over HTTP digest or basic auth."""
        camera = self._camera
        uri = await self._call("GetSnapshotUri", lambda: camera.get_snapshot_uri(self._profile))
        if uri is None:
            raise BadDeviceReply("camera gave no snapshot URI")
        image = await self._call(
            "snapshot",
            lambda: camera.get_snapshot(
                self._profile, self.config.snapshot_auth == "basic", self._timeout_s
            ),
        )
        if image is None:
            raise BadDeviceReply("snapshot URL answered with an HTTP error")
        return bytes(image)

    async def presets(self) -> Mapping[str, str]:
        """The camera's PTZ presets, name -> token (asked once per session)."""
        if self._presets is None:
            ptz = await self._call("ptz service", self._camera.create_ptz_service)
            found: Any = await self._call(
                "GetPresets", lambda: ptz.GetPresets({"ProfileToken": self._profile})
            )
            self._presets = {str(p.Name): str(p.token) for p in found or ()}
        return self._presets

    async def goto_preset(self, token: str) -> int:
        """Move to a preset; return when the request went out (monotonic ns)."""
        ptz = await self._call("ptz service", self._camera.create_ptz_service)
        on_wire_ns = time.monotonic_ns()
        await self._call(
            "GotoPreset",
            lambda: ptz.GotoPreset({"ProfileToken": self._profile, "PresetToken": token}),
        )
        return on_wire_ns


def _duration(seconds: float) -> str:
    return f"PT{max(1, round(seconds))}S"


def _lifetime_s(result: Any, asked_s: float) -> float:
    """TerminationTime - CurrentTime of a subscribe or renew reply, else what we asked."""
    current = getattr(result, "CurrentTime", None)
    termination = getattr(result, "TerminationTime", None)
    if isinstance(current, dt.datetime) and isinstance(termination, dt.datetime):
        seconds = (termination - current).total_seconds()
        if seconds > 0:
            return seconds
    return asked_s


def _items(node: Any) -> dict[str, str]:
    if node is None:
        return {}
    return {str(i.Name): str(i.Value) for i in node.SimpleItem or ()}


def _notification(message: Any) -> Notification:
    body = message.Message._value_1
    return Notification(
        topic=str(message.Topic._value_1),
        source=_items(body.Source),
        data=_items(body.Data),
        operation=str(body.PropertyOperation or ""),
    )
