"""An ONVIF camera: device, media, events (pull point) and PTZ services over SOAP 1.2.

Built on aiohttp + lxml rather than a SOAP framework: the client under test (zeep, through
onvif-zeep-async) must not also be the server, and faults need per-request control. It
answers what the gatewayd driver and the onvif-zeep-async client use: GetSystemDateAndTime
(unauthenticated), GetServices, GetCapabilities, GetDeviceInformation, GetProfiles,
GetSnapshotUri, CreatePullPointSubscription, PullMessages, Renew, Unsubscribe, GetPresets and
GotoPreset, every call but the first checked against a WS-Security UsernameToken. Snapshots are
JPEG frames drawn with OpenCV (name, counter, time) behind HTTP digest or basic auth.

Faults: :meth:`reboot` (subscriptions lost, refuses connections for a moment),
:meth:`drop_subscriptions`, :meth:`vanish` / :meth:`reappear`, and the shared ``faults``:
``delay_ms`` (every reply late), ``drop`` and ``hang`` (a request never answered) and
``corrupt`` (SOAP replies that are not XML, snapshots that are not JPEG). PTZ moves are the
camera's writes (:attr:`write_log`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

import cv2
import numpy as np
from aiohttp import web

from gatewayd.simulators.base import Simulator
from gatewayd.simulators.onvif_http_auth import HttpAuth
from gatewayd.simulators.onvif_soap import (
    CONTENT_TYPE,
    NS,
    Request,
    SoapError,
    check_username_token,
    envelope,
    fault,
    iso,
    parse_duration_s,
    parse_request,
    parse_termination_s,
    utcnow,
)

MOTION = "tns1:VideoSource/MotionAlarm"
CELL_MOTION = "tns1:RuleEngine/CellMotionDetector/Motion"
SCENE_CHANGE = "tns1:VideoSource/GlobalSceneChange/ImagingService"
DIGITAL_INPUT = "tns1:Device/Trigger/DigitalInput"
TAMPER = "tns1:RuleEngine/TamperDetector/Tamper"
#: The Data item that carries the state, per topic (cameras name it differently).
_STATE_ITEM = {CELL_MOTION: "IsMotion", DIGITAL_INPUT: "LogicalState", TAMPER: "IsTamper"}
_SOURCE_ITEM = {DIGITAL_INPUT: ("InputToken", "DIGIT_INPUT_000")}
#: The driver's neutral topics, each with the ONVIF topic a camera sends for it.
NEUTRAL_TOPICS = {"motion": MOTION, "tamper": TAMPER, "digital_input": DIGITAL_INPUT}
#: Messages kept per subscription; beyond it the oldest are dropped, as cameras do.
QUEUE_LIMIT = 1000
#: Longest PullMessages wait we honour (ONVIF lets a device cap it).
MAX_PULL_S = 60.0
DEFAULT_TERMINATION_S = 60.0
#: What a garbled camera answers to SOAP: truncated, mis-encoded, not an envelope.
GARBAGE = b"\xff\xfe<Envelope garbled \x00\x01 <<"
DIALECT = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"


class HttpSeen(NamedTuple):
    """One HTTP request received, before any fault applied."""

    ns: int
    method: str
    path: str


class PtzMove(NamedTuple):
    """One GotoPreset carried out."""

    ns: int
    preset: str


@dataclass
class _Subscription:
    id: int
    expires: float
    queue: deque[str] = field(default_factory=lambda: deque(maxlen=QUEUE_LIMIT))
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False


class OnvifCameraSim(Simulator[PtzMove, HttpSeen]):
    """One simulated camera on ``host:port`` (port 0 picks a free one)."""

    kind = "onvif_camera"

    def __init__(
        self,
        name: str = "camera",
        *,
        username: str = "admin",
        password: str = "secret",
        host: str = "127.0.0.1",
        port: int = 0,
        ptz: bool = True,
        presets: tuple[str, ...] = ("Home", "Entrance", "Hallway"),
        frame_size: tuple[int, int] = (640, 480),
        snapshot_auth: Literal["digest", "basic", "any"] = "any",
    ) -> None:
        super().__init__(name, host=host, port=port)
        self.username = username
        self.password = password
        self.ptz = ptz
        #: Preset tokens are "1", "2", ... in this order.
        self.presets = {str(i): n for i, n in enumerate(presets, start=1)}
        self.frame_size = frame_size
        #: Snapshots served (a valid JPEG or, when garbled, the garbage), in order: monotonic ns.
        self.snapshot_log: deque[int] = deque(maxlen=10_000)
        self._auth = HttpAuth(username, password, snapshot_auth)
        self._subs: dict[int, _Subscription] = {}
        #: The state of each property topic, as a new subscription is told it ("Initialized").
        self._states: dict[str, tuple[bool, str]] = {
            topic: (False, "VideoSource_1") for topic in NEUTRAL_TOPICS.values()
        }
        self._ids = itertools.count(1)
        self._frames = itertools.count(1)
        self._runner: web.AppRunner | None = None

    # --- lifecycle --------------------------------------------------------------------

    @property
    def ptz_log(self) -> list[str]:
        """Preset tokens moved to, in order."""
        return [move.preset for move in self.write_log]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def device_url(self) -> str:
        return f"{self.base_url}/onvif/device_service"

    @property
    def subscriptions(self) -> int:
        """Live (unexpired, not dropped) subscriptions."""
        self._expire()
        return len(self._subs)

    def _about(self) -> dict[str, Any]:
        return {"url": self.device_url}

    async def _open(self) -> int:
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_post("/onvif/{service:.*}", self._soap)
        app.router.add_get("/snapshot.jpg", self._snapshot)
        # A short shutdown: a power cut does not wait for long polls to finish.
        runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        # Subscriptions die with the power; the base then ends handlers aiohttp left parked.
        self.drop_subscriptions()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- faults -----------------------------------------------------------------------

    def drop_subscriptions(self) -> None:
        """Forget every subscription; pending and later pulls on them get a fault."""
        for sub in self._subs.values():
            sub.dropped = True
            sub.wake.set()
        self._subs.clear()
        self.counts["subscriptions_dropped"] += 1

    async def reboot(self, down_s: float = 0.5) -> None:
        """Lose all subscriptions and refuse connections for ``down_s``, then come back."""
        self.counts["reboots"] += 1
        await self.vanish()
        await asyncio.sleep(down_s)
        await self.reappear()

    # --- events -----------------------------------------------------------------------

    def inject(self, topic: str, active: bool, source: str = "VideoSource_1") -> int:
        """Queue an event (``tns1:...`` topic) into every live subscription; how many."""
        self._expire()
        self._states[topic] = (active, source)
        message = _notification(topic, active, source, "Changed")
        for sub in self._subs.values():
            sub.queue.append(message)
            sub.wake.set()
        self.counts["events_injected"] += 1
        return len(self._subs)

    def _expire(self) -> None:
        now = asyncio.get_running_loop().time()
        for sid in [s.id for s in self._subs.values() if s.expires <= now]:
            self._subs.pop(sid).dropped = True
            self.counts["subscriptions_expired"] += 1

    # --- HTTP handlers ------------------------------------------------------------------

    async def _soap(self, request: web.Request) -> web.Response:
        return await self._tracked(self._answer(request))

    async def _snapshot(self, request: web.Request) -> web.Response:
        return await self._tracked(self._serve_snapshot(request))

    async def _tracked(self, reply: Coroutine[object, object, web.Response]) -> web.Response:
        async with self._owned():
            return await reply

    async def _faults(self, request: web.Request) -> None:
        """Log the request, then apply delay, drop and hang (never answered until stopped)."""
        self.request_log.append(HttpSeen(time.monotonic_ns(), request.method, request.path))
        await self._delay()
        if self.faults.hang or self.faults.lost():
            self.counts["dropped"] += 1
            await asyncio.Event().wait()

    async def _answer(self, request: web.Request) -> web.Response:
        raw = await request.read()
        await self._faults(request)
        self.counts["requests"] += 1
        if self.faults.roll(self.faults.corrupt):
            self.counts["garbled"] += 1
            return web.Response(body=GARBAGE, content_type=CONTENT_TYPE)
        try:
            parsed = parse_request(raw)
            self.counts[parsed.operation] += 1
            if parsed.operation != "GetSystemDateAndTime":
                try:
                    check_username_token(parsed, self.username, self.password)
                except SoapError:
                    self.counts["auth_refused"] += 1
                    raise
            body = await self._dispatch(parsed, request.match_info["service"])
        except SoapError as exc:
            self.counts["faults"] += 1
            status = 400 if exc.sender else 500
            return web.Response(body=fault(exc), status=status, content_type=CONTENT_TYPE)
        return web.Response(body=envelope(body), content_type=CONTENT_TYPE)

    async def _serve_snapshot(self, request: web.Request) -> web.Response:
        await self._faults(request)
        refusal = self._auth.check(request)
        if refusal is not None:
            self.counts["snapshot_auth_refused"] += 1
            return refusal
        if self.faults.roll(self.faults.corrupt):
            self.counts["garbled"] += 1
            body = b"this is not a JPEG, it is a camera having a bad day"
        else:
            body = await asyncio.to_thread(self._draw_frame, next(self._frames))
        self.snapshot_log.append(time.monotonic_ns())
        self.counts["snapshots"] += 1
        return web.Response(body=body, content_type="image/jpeg")

    def _draw_frame(self, number: int) -> bytes:
        width, height = self.frame_size
        x = np.linspace(0, 255, width, dtype=np.uint8)
        image = np.dstack([np.tile(x, (height, 1))] * 3)
        image[:, :, 0] = (image[:, :, 0].astype(np.uint16) + number * 8 % 256).astype(np.uint8)
        stamp = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
        for row, text in enumerate((self.name, f"frame {number}", stamp)):
            cv2.putText(
                image,
                text,
                (16, 40 + 36 * row),
                cv2.FONT_HERSHEY_SIMPLEX,
                1.0,
                (255, 255, 255),
                2,
                cv2.LINE_AA,
            )
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        assert ok
        return bytes(jpeg.tobytes())

    # --- operations -----------------------------------------------------------------------

    def _profile(self) -> str:
        """The one media profile, with the configurations a Profile S camera's profile has:
        its video source, a JPEG encoder at the frame size, and PTZ when it can move."""
        width, height = self.frame_size
        ptz = (
            '<tt:PTZConfiguration token="ptz_config_1"><tt:Name>ptz</tt:Name>'
            "<tt:UseCount>1</tt:UseCount><tt:NodeToken>ptz_node_1</tt:NodeToken>"
            "</tt:PTZConfiguration>"
            if self.ptz
            else ""
        )
        return (
            '<trt:Profiles token="profile_1" fixed="true"><tt:Name>main</tt:Name>'
            '<tt:VideoSourceConfiguration token="video_source_config_1"><tt:Name>source</tt:Name>'
            "<tt:UseCount>1</tt:UseCount><tt:SourceToken>VideoSource_1</tt:SourceToken>"
            f'<tt:Bounds x="0" y="0" width="{width}" height="{height}"/>'
            "</tt:VideoSourceConfiguration>"
            '<tt:VideoEncoderConfiguration token="video_encoder_config_1">'
            "<tt:Name>jpeg</tt:Name><tt:UseCount>1</tt:UseCount><tt:Encoding>JPEG</tt:Encoding>"
            f"<tt:Resolution><tt:Width>{width}</tt:Width><tt:Height>{height}</tt:Height>"
            "</tt:Resolution><tt:Quality>5</tt:Quality><tt:RateControl>"
            "<tt:FrameRateLimit>5</tt:FrameRateLimit><tt:EncodingInterval>1</tt:EncodingInterval>"
            "<tt:BitrateLimit>2048</tt:BitrateLimit></tt:RateControl><tt:Multicast>"
            "<tt:Address><tt:Type>IPv4</tt:Type><tt:IPv4Address>0.0.0.0</tt:IPv4Address>"
            "</tt:Address><tt:Port>0</tt:Port><tt:TTL>1</tt:TTL><tt:AutoStart>false"
            "</tt:AutoStart></tt:Multicast><tt:SessionTimeout>PT60S</tt:SessionTimeout>"
            f"</tt:VideoEncoderConfiguration>{ptz}</trt:Profiles>"
        )

    async def _dispatch(self, req: Request, service: str) -> str:
        match req.operation:
            case "GetSystemDateAndTime":
                return _date_and_time()
            case "GetServices":
                return self._services()
            case "GetCapabilities":
                return self._capabilities()
            case "GetDeviceInformation":
                return (
                    "<tds:GetDeviceInformationResponse><tds:Manufacturer>gatewayd</tds:Manufacturer>"
                    f"<tds:Model>SimCam {escape_attr(self.name)}</tds:Model>"
                    "<tds:FirmwareVersion>1.0</tds:FirmwareVersion>"
                    f"<tds:SerialNumber>SIM-{self._port}</tds:SerialNumber>"
                    "<tds:HardwareId>sim</tds:HardwareId></tds:GetDeviceInformationResponse>"
                )
            case "GetProfiles":
                return f"<trt:GetProfilesResponse>{self._profile()}</trt:GetProfilesResponse>"
            case "GetSnapshotUri":
                return (
                    f"<trt:GetSnapshotUriResponse><trt:MediaUri><tt:Uri>{self.base_url}/snapshot.jpg"
                    "</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
                    "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S"
                    "</tt:Timeout></trt:MediaUri></trt:GetSnapshotUriResponse>"
                )
            case "CreatePullPointSubscription":
                return self._subscribe(req)
            case "PullMessages":
                return await self._pull(req, service)
            case "Renew":
                return self._renew(req, service)
            case "Unsubscribe":
                sub = self._subscription(service)
                self._subs.pop(sub.id).dropped = True
                return "<wsnt:UnsubscribeResponse/>"
            case "GetScopes":
                scopes = ("onvif://www.onvif.org/type/video_encoder",
                          f"onvif://www.onvif.org/name/{quote(self.name)}",
                          "onvif://www.onvif.org/hardware/SimCam",
                          "onvif://www.onvif.org/Profile/Streaming")  # fmt: skip
                items = "".join(
                    f"<tds:Scopes><tt:ScopeDef>Fixed</tt:ScopeDef><tt:ScopeItem>{escape(s)}"
                    "</tt:ScopeItem></tds:Scopes>"
                    for s in scopes
                )
                return f"<tds:GetScopesResponse>{items}</tds:GetScopesResponse>"
            case "GetNetworkInterfaces":
                return (
                    '<tds:GetNetworkInterfacesResponse><tds:NetworkInterfaces token="eth0">'
                    "<tt:Enabled>true</tt:Enabled><tt:Info><tt:Name>eth0</tt:Name>"
                    f"<tt:HwAddress>02:00:00:00:{self._port >> 8 & 255:02x}:{self._port & 255:02x}"
                    "</tt:HwAddress><tt:MTU>1500</tt:MTU></tt:Info><tt:IPv4>"
                    "<tt:Enabled>true</tt:Enabled><tt:Config><tt:Manual>"
                    f"<tt:Address>{self.host}</tt:Address><tt:PrefixLength>8</tt:PrefixLength>"
                    "</tt:Manual><tt:DHCP>false</tt:DHCP></tt:Config></tt:IPv4>"
                    "</tds:NetworkInterfaces></tds:GetNetworkInterfacesResponse>"
                )
            case "GetStreamUri":
                return (
                    "<trt:GetStreamUriResponse><trt:MediaUri>"
                    f"<tt:Uri>rtsp://{self.host}:554/profile_1</tt:Uri>"
                    "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
                    "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S"
                    "</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>"
                )
            case "GetEventProperties":
                return self._event_properties()
            case "GetStatus" if self.ptz:
                return self._ptz_status()
            case "GetPresets" if self.ptz:
                presets = "".join(
                    f'<tptz:Preset token="{t}"><tt:Name>{escape_attr(n)}</tt:Name></tptz:Preset>'
                    for t, n in self.presets.items()
                )
                return f"<tptz:GetPresetsResponse>{presets}</tptz:GetPresetsResponse>"
            case "GotoPreset" if self.ptz:
                return self._goto(req)
        raise SoapError("ter:ActionNotSupported", f"{req.operation} is not supported")

    def _services(self) -> str:
        services = [("tds", "device"), ("trt", "media"), ("tev", "events")]
        if self.ptz:
            services.append(("tptz", "ptz"))
        entries = "".join(
            f"<tds:Service><tds:Namespace>{NS[prefix]}</tds:Namespace>"
            f"<tds:XAddr>{self.base_url}/onvif/{name}_service</tds:XAddr>"
            "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version>"
            "</tds:Service>"
            for prefix, name in services
        )
        return f"<tds:GetServicesResponse>{entries}</tds:GetServicesResponse>"

    def _capabilities(self) -> str:
        base = self.base_url
        ptz = f"<tt:PTZ><tt:XAddr>{base}/onvif/ptz_service</tt:XAddr></tt:PTZ>" if self.ptz else ""
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Device><tt:XAddr>{base}/onvif/device_service</tt:XAddr></tt:Device>"
            f"<tt:Events><tt:XAddr>{base}/onvif/events_service</tt:XAddr>"
            "<tt:WSSubscriptionPolicySupport>false</tt:WSSubscriptionPolicySupport>"
            "<tt:WSPullPointSupport>true</tt:WSPullPointSupport>"
            "<tt:WSPausableSubscriptionManagerInterfaceSupport>false"
            "</tt:WSPausableSubscriptionManagerInterfaceSupport></tt:Events>"
            f"<tt:Media><tt:XAddr>{base}/onvif/media_service</tt:XAddr></tt:Media>{ptz}"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    def _subscribe(self, req: Request) -> str:
        self._expire()
        seconds = parse_termination_s(req.text("InitialTerminationTime"), DEFAULT_TERMINATION_S)
        sub = _Subscription(next(self._ids), asyncio.get_running_loop().time() + seconds)
        # As real cameras do: the first pull tells the state of every property, "Initialized".
        for topic, (active, source) in self._states.items():
            sub.queue.append(_notification(topic, active, source, "Initialized"))
        self._subs[sub.id] = sub
        now = utcnow()
        return (
            "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference>"
            f"<wsa:Address>{self.base_url}/onvif/subscription/{sub.id}</wsa:Address>"
            f"</tev:SubscriptionReference><wsnt:CurrentTime>{iso(now)}</wsnt:CurrentTime>"
            f"<wsnt:TerminationTime>{iso(now + dt.timedelta(seconds=seconds))}"
            "</wsnt:TerminationTime></tev:CreatePullPointSubscriptionResponse>"
        )

    def _subscription(self, service: str) -> _Subscription:
        self._expire()
        head, _, tail = service.rpartition("/")
        sub = self._subs.get(int(tail)) if head == "subscription" and tail.isdigit() else None
        if sub is None:
            raise SoapError("wsrf-rw:ResourceUnknownFault", "no such subscription")
        return sub

    async def _pull(self, req: Request, service: str) -> str:
        sub = self._subscription(service)
        wait_s = min(parse_duration_s(req.text("Timeout") or "PT1S"), MAX_PULL_S)
        limit = max(1, int(req.text("MessageLimit") or "100"))
        if not sub.queue:
            sub.wake.clear()
            try:
                async with asyncio.timeout(wait_s):
                    await sub.wake.wait()
            except TimeoutError:
                pass
        if sub.dropped:
            raise SoapError("wsrf-rw:ResourceUnknownFault", "subscription was dropped")
        messages = [sub.queue.popleft() for _ in range(min(limit, len(sub.queue)))]
        now = utcnow()
        left_s = sub.expires - asyncio.get_running_loop().time()
        return (
            f"<tev:PullMessagesResponse><tev:CurrentTime>{iso(now)}</tev:CurrentTime>"
            f"<tev:TerminationTime>{iso(now + dt.timedelta(seconds=left_s))}"
            f"</tev:TerminationTime>{''.join(messages)}</tev:PullMessagesResponse>"
        )

    def _renew(self, req: Request, service: str) -> str:
        sub = self._subscription(service)
        seconds = parse_termination_s(req.text("TerminationTime"), DEFAULT_TERMINATION_S)
        sub.expires = asyncio.get_running_loop().time() + seconds
        now = utcnow()
        return (
            f"<wsnt:RenewResponse><wsnt:TerminationTime>"
            f"{iso(now + dt.timedelta(seconds=seconds))}</wsnt:TerminationTime>"
            f"<wsnt:CurrentTime>{iso(now)}</wsnt:CurrentTime></wsnt:RenewResponse>"
        )

    def _event_properties(self) -> str:
        """The topic set: every topic this camera can send, as a tree of topic elements."""
        tree: dict[str, Any] = {}
        for topic in (MOTION, CELL_MOTION, SCENE_CHANGE, DIGITAL_INPUT, TAMPER):
            node = tree
            for part in topic.removeprefix("tns1:").split("/"):
                node = node.setdefault(part, {})

        def render(node: dict[str, Any]) -> str:
            return "".join(
                f'<tns1:{name} wstop:topic="true"/>' if not children
                else f"<tns1:{name}>{render(children)}</tns1:{name}>"
                for name, children in node.items()
            )  # fmt: skip

        return (
            "<tev:GetEventPropertiesResponse>"
            "<tev:TopicNamespaceLocation>http://www.onvif.org/onvif/ver10/topics/topicns.xml"
            "</tev:TopicNamespaceLocation><wsnt:FixedTopicSet>true</wsnt:FixedTopicSet>"
            f'<wstop:TopicSet xmlns:wstop="http://docs.oasis-open.org/wsn/t-1">{render(tree)}'
            "</wstop:TopicSet>"
            f"<wsnt:TopicExpressionDialect>{DIALECT}</wsnt:TopicExpressionDialect>"
            "<tev:MessageContentFilterDialect>http://www.onvif.org/ver10/tev/messageContentFilter/"
            "ItemFilter</tev:MessageContentFilterDialect>"
            "<tev:MessageContentSchemaLocation>http://www.onvif.org/onvif/ver10/schema/onvif.xsd"
            "</tev:MessageContentSchemaLocation></tev:GetEventPropertiesResponse>"
        )

    def _ptz_status(self) -> str:
        """Where the camera points: the last preset moved to (its index as pan), idle."""
        last = self.write_log[-1].preset if self.write_log else "1"
        pan = (int(last) - 1) / max(1, len(self.presets))
        return (
            "<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>"
            f'<tt:PanTilt x="{pan:.3f}" y="0"/><tt:Zoom x="0"/></tt:Position>'
            "<tt:MoveStatus><tt:PanTilt>IDLE</tt:PanTilt><tt:Zoom>IDLE</tt:Zoom></tt:MoveStatus>"
            f"<tt:UtcTime>{iso(utcnow())}</tt:UtcTime></tptz:PTZStatus></tptz:GetStatusResponse>"
        )

    def _goto(self, req: Request) -> str:
        token = req.text("PresetToken")
        if token not in self.presets:
            raise SoapError("ter:NoToken", f"no preset {token!r}")
        self.write_log.append(PtzMove(time.monotonic_ns(), token))
        return "<tptz:GotoPresetResponse/>"


def _date_and_time() -> str:
    now = utcnow()
    return (
        "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
        "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
        "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone><tt:UTCDateTime>"
        f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
        f"<tt:Second>{now.second}</tt:Second></tt:Time><tt:Date><tt:Year>{now.year}</tt:Year>"
        f"<tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day></tt:Date>"
        "</tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
    )


def escape_attr(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


def _notification(topic: str, active: bool, source: str, operation: str) -> str:
    """One NotificationMessage; escaped, since topics and sources come from outside."""
    source_name, default_source = _SOURCE_ITEM.get(topic, ("Source", source))
    source_value = source if topic not in _SOURCE_ITEM else default_source
    item = _STATE_ITEM.get(topic, "State")
    return (
        f'<wsnt:NotificationMessage><wsnt:Topic Dialect="{DIALECT}">{escape(topic)}'
        f'</wsnt:Topic><wsnt:Message><tt:Message UtcTime="{iso(utcnow())}"'
        f' PropertyOperation="{operation}"><tt:Source>'
        f"<tt:SimpleItem Name={quoteattr(source_name)} Value={quoteattr(source_value)}/>"
        f'</tt:Source><tt:Data><tt:SimpleItem Name="{item}" Value="{str(active).lower()}"/>'
        "</tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>"
    )
