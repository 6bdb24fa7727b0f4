"""The MQTT uplink (aiomqtt, MQTT 5): availability, retained state, events, commands.

Topics live under ``<prefix>/<site>`` (see docs/mqtt-api.md):

- ``availability``: retained ``online`` after each connect, ``offline`` as the last will and
  before a clean disconnect.
- ``state/<scope>``, ``door/<id>``: retained; the latest payload per topic is kept here and
  published again after every (re)connect, because a restarted broker may have lost it.
- ``event/<kind>``: QoS 1 through a :class:`PublishQueue` (the durable
  :class:`~gatewayd.outbox.Outbox` in the daemon); an entry is acked only after the
  broker's PUBACK, so a connection lost mid-flight re-sends it (same payload, same event id).
- ``cmd``: each request goes to the daemon's handler; the reply goes to the MQTT 5 response
  topic with the request's correlation data, else to ``cmd/result``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gatewayd.kernel.backoff import Backoff
from gatewayd.kernel.cancel import raise_if_cancelling
from gatewayd.security.tls import ssl_context
from gatewayd.uplink import protocol
from gatewayd.uplink.admission import Admission, Incoming
from gatewayd.uplink.config import MqttConfig
from gatewayd.uplink.outbox import MemoryQueue, PublishQueue, PublishQueueFull
from gatewayd.uplink.wire import check_suffix, encode, first_leaf, set_nodelay, valid_topic

log = structlog.get_logger(__name__)

#: Parses, authorises and executes one command body (and when it arrived, monotonic ns);
#: returns the reply body.
CommandHandler = Callable[[bytes, int], Awaitable[dict[str, Any]]]
#: Whether a command body looks signed by a known actor (see :mod:`gatewayd.uplink.admission`).
Classifier = Callable[[bytes], bool]

#: Events published concurrently (each awaits its PUBACK); below paho's window of 20.
PUBLISH_WORKERS = 16
#: Commands handled concurrently, so a slow lockdown does not block the next command.
COMMAND_WORKERS = 32
#: Largest packet the broker may send us (MQTT 5 Maximum Packet Size): a command is at most
#: 16 KiB, so a 200 MB payload is dropped by the broker and never reaches this process.
MAX_PACKET_BYTES = 64 * 1024
#: Retained topics published concurrently after a reconnect.
RETAINED_WORKERS = 16
#: Longest a round of retained topics waits for the doors to be written and confirmed.
RETAINED_HOLD_S = 0.25
#: How often a held round looks at ``busy`` again.
RETAINED_HOLD_POLL_S = 0.005
#: 0.2 s doubling to 5 s, with full jitter.
RECONNECT_BACKOFF = Backoff(min_s=0.2, max_s=5.0)
#: MQTT 5 DISCONNECT reason 0x8E: another client connected with our client id. Brokers that
#: say so (EMQX, HiveMQ) are believed at once; Mosquitto 2.0 just closes the socket.
SESSION_TAKEN_OVER = 142
#: So also: this many losses of an established session within the window, each followed by
#: a connection the broker accepts at once, is someone using our client id (or a link that
#: keeps failing): an alarm either way.
FLAPS_SUSPECT = 3
FLAP_WINDOW_S = 60.0

#: Told of what the uplink alone sees and people must know: ``(type, details)``.
AlarmListener = Callable[[str, dict[str, Any]], None]


class Uplink:
    """One connection to the broker, kept up forever; run it with ``await uplink.run(...)``."""

    def __init__(
        self,
        config: MqttConfig,
        site: str,
        on_command: CommandHandler,
        *,
        classify: Classifier = lambda payload: False,
        queue: PublishQueue | None = None,
        backoff: Backoff = RECONNECT_BACKOFF,
        connect_timeout_s: float = 5.0,
        goodbye_timeout_s: float = 1.0,
        reply_timeout_s: float = 10.0,
        on_alarm: AlarmListener | None = None,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._config = config
        #: True while doors are being written: retained topics (state, not events) wait.
        self._busy = busy
        self._on_alarm = on_alarm
        #: Monotonic times the broker ended an established session, recent first.
        self._losses: deque[float] = deque(maxlen=64)
        self._alarmed_at = -FLAP_WINDOW_S
        self._disconnect_reason: int | None = None
        self._site = site
        self._on_command = on_command
        self._queue: PublishQueue = queue if queue is not None else MemoryQueue()
        self._backoff = backoff
        self._connect_timeout_s = connect_timeout_s
        self._goodbye_timeout_s = goodbye_timeout_s
        self._reply_timeout_s = reply_timeout_s
        #: Every topic starts with this (``gatewayd/lincoln-hs``).
        self.base = f"{config.prefix}/{site}"
        self._command_topic = f"{self.base}/cmd"
        self.identifier = config.client_id or f"gatewayd-{site}"
        self._retained: dict[str, bytes] = {}
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._ready = asyncio.Event()
        #: Incoming commands, trusted lane first, both bounded.
        self.admission = Admission(classify)
        self._stats: dict[str, int] = dict.fromkeys(
            ("published", "acked", "retained_published", "retained_held", "reconnects",
             "connect_failures",
             "commands", "command_errors", "replies_lost", "rejected_life_safety",
             "retained_commands_ignored", "response_topics_refused", "takeovers"),
            0,
        )  # fmt: skip
        self._last_connect = ""
        self._established = False
        self._protocol_warned = False

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    def publish_event(self, kind: str, payload: Mapping[str, Any], *, life_safety: bool) -> None:
        """Queue an event for ``event/<kind>``; never blocks.

        Raises :class:`PublishQueueFull` if a life-safety event cannot be queued.
        """
        check_suffix(kind)
        try:
            self._queue.put(f"event/{kind}", encode(payload), life_safety=life_safety)
        except PublishQueueFull:
            self._stats["rejected_life_safety"] += 1
            log.critical(
                "mqtt.life_safety_overflow",
                kind=kind,
                rejected=self._stats["rejected_life_safety"],
                queued=len(self._queue),
            )
            raise

    def publish_message(self, topic_suffix: str, payload: bytes, *, life_safety: bool) -> None:
        """Queue a non-JSON message (a CAP alert on ``cap``) through the same durable outbox."""
        check_suffix(topic_suffix)
        try:
            self._queue.put(topic_suffix, payload, life_safety=life_safety)
        except PublishQueueFull:
            self._stats["rejected_life_safety"] += 1
            log.critical("mqtt.life_safety_overflow", topic=topic_suffix, queued=len(self._queue))
            raise

    def set_retained(self, topic_suffix: str, payload: Mapping[str, Any] | str) -> None:
        """Keep ``payload`` as the retained value of ``topic_suffix``; publish it when connected."""
        check_suffix(topic_suffix)
        self._retained[topic_suffix] = encode(payload)
        self._dirty.add(topic_suffix)
        self._dirty_event.set()

    def statistics(self) -> dict[str, int | float | str]:
        stats: dict[str, int | float | str] = {**self._stats, **self._queue.statistics()}
        stats.update({f"admission_{k}": v for k, v in self.admission.statistics().items()})
        stats["connected"] = int(self.connected)
        stats["retained_topics"] = len(self._retained)
        stats["last_connect"] = self._last_connect
        return stats

    async def run(self, started: Callable[[], None], *, close_queue: bool = True) -> None:
        """Connect, serve, reconnect with backoff, until cancelled.

        ``started`` is called after the first connection attempt, whether it worked or not.
        The queue is closed when this returns, unless ``close_queue`` is false: then the
        owner closes it (:meth:`close_queue`) once it has queued what it says last.
        """
        announced = False

        def once() -> None:
            nonlocal announced
            if not announced:
                announced = True
                started()

        try:
            async with asyncio.TaskGroup() as commands:
                # Workers outlive connections: a lost connection never cancels a lockdown.
                for i in range(COMMAND_WORKERS):
                    commands.create_task(self._work(), name=f"mqtt:command:{i}")
                await self._reconnect_forever(once)
        finally:
            if close_queue:
                # What is staged goes to disk before the process ends.
                self._queue.close()

    def close_queue(self) -> None:
        """Close the publish queue (staged events to disk); after :meth:`run` has returned."""
        self._queue.close()

    async def _reconnect_forever(self, once: Callable[[], None]) -> None:
        attempt = 0
        while True:
            self._established = False
            try:
                await self._connection(once)
            except aiomqtt.MqttError as exc:
                reason = self._disconnect_reason or protocol.reason_code(exc)
                self._disconnect_reason = None
                if self._established:
                    log.warning("mqtt.disconnected", url=self._config.url, error=str(exc),
                                reason=reason)  # fmt: skip
                    self._session_lost(taken_over=reason == SESSION_TAKEN_OVER)
                else:
                    self._stats["connect_failures"] += 1
                    self._protocol_refused(exc)
                    log.warning(
                        "mqtt.connect_failed",
                        url=self._config.url,
                        attempt=attempt + 1,
                        error=str(exc),
                    )
            if self._established:
                attempt = 0
            once()
            delay = self._backoff.delay_s(attempt)
            # Bounded: the delay is capped long before, and 2**attempt must stay a float.
            attempt = min(attempt + 1, 30)
            log.info("mqtt.reconnect_wait", attempt=attempt, delay_s=round(delay, 2))
            await asyncio.sleep(delay)

    async def _connection(self, started: Callable[[], None]) -> None:
        """One session: connect, announce, serve until the connection breaks."""
        client = self._make_client()
        log.info("mqtt.connecting", url=self._config.url, client_id=self.identifier)
        cancelled = False
        try:
            async with client:
                set_nodelay(client)
                try:
                    await self._announce(client, started)
                    await self._serve(client)
                except asyncio.CancelledError:
                    cancelled = True
                    self._ready.clear()
                    await self._goodbye(client)
                    raise
        except* aiomqtt.MqttError as group:
            if cancelled:
                # Disconnecting failed during shutdown: the cancellation still wins.
                log.warning("mqtt.disconnect_failed", error=str(first_leaf(group)))
                raise asyncio.CancelledError from None
            # The reader, a publisher or the handshake saw the connection go: report the first,
            # with the broker's reason for ending it, which aiomqtt keeps apart (its message
            # iterator raises a plain "Disconnected during message iteration").
            leaf = first_leaf(group)
            self._disconnect_reason = _broker_reason(client) or protocol.reason_code(leaf)
            raise leaf from None
        finally:
            self._ready.clear()
            self._client = None
            self._queue.rewind()

    async def _announce(self, client: aiomqtt.Client, started: Callable[[], None]) -> None:
        """Subscribe to commands, say ``online``, schedule the retained topics."""
        # The session outlives connections, so a command planted as retained while we were
        # away is delivered as a live one unless its retain flag is kept: keep it (and skip
        # the retained copy at subscription) so that _read_commands can ignore it. A refused
        # SUBACK fails the connection: never `online` without a command subscription.
        await protocol.subscribe(client, self._config, f"{self.base}/cmd", keep_retain_flag=True)
        await client.publish(f"{self.base}/availability", b"online", 1, True)
        if self._last_connect:
            self._stats["reconnects"] += 1
        self._last_connect = datetime.now(UTC).isoformat(timespec="milliseconds")
        self._client = client
        self._established = True
        self._ready.set()
        self._dirty.update(self._retained)
        self._dirty_event.set()
        log.info("mqtt.connected", url=self._config.url, queued=len(self._queue))
        started()

    def _protocol_refused(self, exc: aiomqtt.MqttError) -> None:
        """Say once, plainly, that the broker refuses our MQTT version (and what to set)."""
        problem = protocol.refused_protocol(self._config, exc)
        if problem is not None and not self._protocol_warned:
            self._protocol_warned = True
            log.error("mqtt.protocol_refused", url=self._config.url, problem=problem)

    def _session_lost(self, *, taken_over: bool) -> None:
        """The broker ended our session; if it keeps doing so, someone may hold our id."""
        now = time.monotonic()
        self._losses.appendleft(now)
        recent = sum(1 for t in self._losses if now - t < FLAP_WINDOW_S)
        if not taken_over and recent < FLAPS_SUSPECT:
            return
        self._stats["takeovers"] += 1
        if now - self._alarmed_at < FLAP_WINDOW_S and not taken_over:
            return  # one alarm a window while it goes on; the count keeps rising
        self._alarmed_at = now
        log.critical("mqtt.session_taken_over", client_id=self.identifier, in_window=recent,
                     said_by_broker=taken_over,
                     note="another client uses this gateway's client id (or the link keeps"
                     " failing); commands may reach it instead: bind client ids to identities"
                     " in the broker (configs/mosquitto-tls.conf)")  # fmt: skip
        if self._on_alarm is not None:
            self._on_alarm("mqtt_takeover", {"client_id": self.identifier,
                                             "losses_in_window": recent,
                                             "window_s": FLAP_WINDOW_S,
                                             "said_by_broker": taken_over})  # fmt: skip

    def _make_client(self) -> aiomqtt.Client:
        cfg = self._config
        will = aiomqtt.Will(f"{self.base}/availability", b"offline", qos=1, retain=True)
        connect: Properties | None = None
        if cfg.protocol == "5":
            connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect.MaximumPacketSize = MAX_PACKET_BYTES
            # A persistent session: commands sent while the gateway reconnects wait at the
            # broker (3.1.1: clean_session false, for as long as the broker keeps sessions).
            connect.SessionExpiryInterval = cfg.session_expiry_s
        admit = self._admit

        class Intake(asyncio.Queue[aiomqtt.Message]):
            """aiomqtt's incoming queue, which hands commands to the lanes instead of queueing."""

            def put_nowait(self, item: aiomqtt.Message) -> None:
                if not admit(item):
                    super().put_nowait(item)

        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=self.identifier,
            protocol=protocol.version(cfg),
            will=will,
            keepalive=cfg.keepalive_s,
            timeout=self._connect_timeout_s,
            tls_context=ssl_context(cfg.tls) if cfg.tls_enabled else None,
            properties=connect,
            **protocol.session_options(cfg, persistent=True),
            queue_type=Intake,
        )
        # paho keeps its default window of 20 in flight (Mosquitto's Receive Maximum; a stricter
        # broker disconnects a client that exceeds it) and holds the rest in order.
        # Concurrent publishes are the design here, not a symptom: silence aiomqtt's warning.
        client.pending_calls_threshold = 1_000
        return client

    async def _serve(self, client: aiomqtt.Client) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._read_commands(client), name="mqtt:commands")
            tg.create_task(self._flush_retained(client), name="mqtt:retained")
            for i in range(PUBLISH_WORKERS):
                tg.create_task(self._drain(client), name=f"mqtt:publish:{i}")

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Clean shutdown: say ``offline`` (the broker drops the will on a clean disconnect)."""
        client.timeout = self._goodbye_timeout_s
        try:
            async with asyncio.timeout(self._goodbye_timeout_s):
                await client.publish(f"{self.base}/availability", b"offline", 1, True)
            log.info("mqtt.offline_published")
        except (TimeoutError, aiomqtt.MqttError) as exc:
            log.warning("mqtt.offline_not_published", error=str(exc) or type(exc).__name__)

    async def _drain(self, client: aiomqtt.Client) -> None:
        # Taking an entry and handing it to paho happen in one step, so wire order = queue order.
        while True:
            entry = await self._queue.get()
            self._stats["published"] += 1
            await client.publish(f"{self.base}/{entry.topic}", entry.payload, 1, False)
            self._queue.ack(entry)
            self._stats["acked"] += 1
            raise_if_cancelling()

    async def _flush_retained(self, client: aiomqtt.Client) -> None:
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            topics, self._dirty = list(self._dirty), set()
            try:
                await self._publish_retained(client, topics)
                raise_if_cancelling()
            except BaseException:
                # Whatever was not confirmed must go again after the next connect.
                self._dirty.update(topics)
                raise

    async def _publish_retained(self, client: aiomqtt.Client, topics: list[str]) -> None:
        # A few workers share one iterator: a task per topic (a lockdown dirties every door's)
        # had the loop run a thousand first steps in one turn, ahead of the next command.
        remaining = iter(topics)
        # One hold per round, awaited by all its workers: it starts when one of them first
        # finds the doors busy, and ends when they are not or RETAINED_HOLD_S later.
        hold: list[asyncio.Task[None]] = []

        async def worker() -> None:
            for topic in remaining:
                if self._busy():
                    if not hold:
                        self._stats["retained_held"] += 1
                        hold.append(tg.create_task(self._quiet(time.monotonic() + RETAINED_HOLD_S)))
                    await hold[0]
                await client.publish(f"{self.base}/{topic}", self._retained[topic], 1, True)
                self._stats["retained_published"] += 1

        async with asyncio.TaskGroup() as tg:
            for _ in range(min(RETAINED_WORKERS, len(topics))):
                tg.create_task(worker())

    async def _quiet(self, deadline: float) -> None:
        """Wait while ``busy`` says so, until ``deadline`` (monotonic) at the latest.

        A release's thousand door topics take the loop for tens of milliseconds: a lockdown
        that comes meanwhile would wait behind them for its writes and read-backs. Events
        (the outbox: alarms, audit) never wait here; the topics go out, newest values, once
        the doors are confirmed.
        """
        while self._busy() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(RETAINED_HOLD_POLL_S)

    async def _read_commands(self, client: aiomqtt.Client) -> None:
        """Hold the connection's message stream: it ends (raises) when the connection does.

        Commands never wait in it: :meth:`_admit` sorts each into its lane the moment paho
        hands it over (see ``_make_client``), so a flood queues in the bounded lanes, where
        it shows and is dropped oldest first, not in aiomqtt's unbounded queue before them.
        """
        async for message in client.messages:
            if not self._admit(message):
                log.debug("mqtt.unexpected_message", topic=str(message.topic)[:200])

    def _admit(self, message: aiomqtt.Message) -> bool:
        """Sort a command into its lane (False: not a command); never blocks, never raises."""
        if not message.topic.matches(self._command_topic):
            return False
        arrived_ns = time.monotonic_ns()
        if message.retain:
            # A command planted as retained would run again at every reconnect.
            self._stats["retained_commands_ignored"] += 1
            return True
        payload = message.payload if isinstance(message.payload, bytes) else b""
        self.admission.offer(Incoming(payload, arrived_ns, message.properties))
        return True

    async def _work(self) -> None:
        while True:
            message = await self.admission.take()
            await self._handle_command(message)

    async def _handle_command(self, message: Incoming) -> None:
        self._stats["commands"] += 1
        payload = message.payload
        try:
            reply = await self._on_command(payload, message.arrived_ns)
            body = encode(reply)
        # The handler's bug must not take the uplink down; the requester learns of it.
        except Exception as exc:
            self._stats["command_errors"] += 1
            log.exception("mqtt.command_failed", size=len(payload))
            reply = {"id": None, "ok": False, "error": "internal",
                     "message": f"{type(exc).__name__}: {exc}"[:500]}  # fmt: skip
            body = encode(reply)
        if self.admission.may_reply(message, refused=reply.get("ok") is False):
            await self._reply(message.properties, body)
        log.debug("mqtt.command", size=len(payload), trusted=message.trusted,
                  ms=round((time.monotonic_ns() - message.arrived_ns) / 1e6, 2))  # fmt: skip

    async def _reply(self, request: Properties | None, body: bytes) -> None:
        response_topic = getattr(request, "ResponseTopic", None)
        correlation = getattr(request, "CorrelationData", None)
        props: Properties | None = None
        if self._config.protocol == "5":
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ContentType = "application/json"
            if correlation is not None:
                props.CorrelationData = correlation
        topic = f"{self.base}/cmd/result"
        if valid_topic(response_topic) and self._may_reply_on(response_topic):
            topic = response_topic
        elif response_topic:
            # Anyone who may send a command names the response topic: under our own prefix it
            # could make the gateway write onto its authoritative topics (state, availability,
            # doors) with its identity, around the broker's ACL. Only cmd/reply/... is ours
            # to answer on; the reply goes to cmd/result instead, the command is unaffected.
            self._stats["response_topics_refused"] += 1
            log.warning("mqtt.response_topic_refused", response_topic=str(response_topic)[:200])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._reply_timeout_s):
                # A failed try means the connection is going; paced until the next one is up.
                while not await self._try_publish(topic, body, props):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                return
        self._stats["replies_lost"] += 1
        log.error("mqtt.reply_lost", topic=topic, timeout_s=self._reply_timeout_s)

    def _may_reply_on(self, topic: str) -> bool:
        """Outside our prefix, or under our own ``cmd/reply/`` (docs/mqtt-api.md, "Replies")."""
        prefix = self._config.prefix
        ours = topic == prefix or topic.startswith(f"{prefix}/")
        return not ours or topic.startswith(f"{self.base}/cmd/reply/")

    async def _try_publish(self, topic: str, body: bytes, props: Properties | None) -> bool:
        await self._ready.wait()
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(topic, body, 1, False, props)
        except aiomqtt.MqttError as exc:
            log.warning("mqtt.reply_retry", topic=topic, error=str(exc))
            return False
        return True


def _broker_reason(client: aiomqtt.Client) -> int | None:
    """The reason code of the DISCONNECT the broker sent, if it sent one."""
    # aiomqtt 2.x keeps it only on this future; read it defensively (None if it moves).
    future = getattr(client, "_disconnected", None)
    if not isinstance(future, asyncio.Future) or not future.done() or future.cancelled():
        return None
    exc = future.exception()
    return protocol.reason_code(exc) if isinstance(exc, aiomqtt.MqttError) else None
