"""``gatewayd district``: every school of a district at once, over the district brokers.

``district.toml`` names the district actor (id and private key file), the district brokers
(``mqtt://h1:1883|h2:1883|h3:1883``: the nodes of one clustered broker, tried in turn) and
the schools (site ids, and brokers where they differ). ``status`` reads what the
schools keep retained; ``lockdown``, ``release``, ... send one command per school, signed
for that school's site, on every path to it, re-signed with a fresh ``ts`` and sent again
until the school answers or the timeout; the school's replay check drops the duplicates
(docs/district.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiomqtt
from pydantic import Field

from gatewayd.kernel.errors import ConfigError
from gatewayd.kernel.validation import Model, read_toml, validated
from gatewayd.security.actors import ACTOR_ID_PATTERN
from gatewayd.uplink import protocol
from gatewayd.uplink.client import snapshot
from gatewayd.uplink.config import MqttConfig
from gatewayd.uplink.wire import UplinkError, encode

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: One node: ``mqtt://host[:port]``; a clustered broker's nodes are joined with ``|``.
NODE_URL = r"^mqtt://[^/:|\s]+(:\d{1,5})?/?$"
#: Errors after which a resend may still succeed: a late copy (``expired``), or a copy of a
#: command that arrived on another path (``replayed``: its own reply is on its way).
NOT_FINAL = frozenset({"expired", "replayed"})
NO_BROKER = "no district broker reached"
#: How long one node may take to accept the connection before the next node is tried.
CONNECT_TIMEOUT_S = 3.0


class DistrictSection(Model):
    #: The district actor: what the schools list in ``[[security.actors]]``, role district.
    actor: str = Field(pattern=ACTOR_ID_PATTERN)
    #: Its private key file (resolved against the district file's folder).
    key: str
    #: The district brokers every school is reached on, unless a school lists its own.
    brokers: tuple[str, ...] = ()
    prefix: str = Field(default="gatewayd", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    protocol: Literal["5", "3.1.1"] = "3.1.1"
    #: A school whose heartbeat is older than this is shown stale.
    stale_after_s: float = Field(default=15.0, gt=0)
    #: How long a command is sent again before the school counts as unreachable.
    timeout_s: float = Field(default=60.0, gt=0)
    #: How long to wait for a reply before re-signing and sending again.
    resend_s: float = Field(default=2.0, gt=0)


class SchoolEntry(Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    name: str = ""
    brokers: tuple[str, ...] = ()


class DistrictFile(Model):
    district: DistrictSection
    schools: tuple[SchoolEntry, ...] = Field(min_length=1)
    #: ``gatewayd district console`` (validated there: gatewayd.app.district_console).
    console: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class District:
    section: DistrictSection
    schools: tuple[SchoolEntry, ...]
    key_path: Path
    #: ``[console]`` as written; :func:`gatewayd.app.district_console.console_settings`.
    console: dict[str, Any] = field(default_factory=dict)
    source: str = "district.toml"

    def brokers_of(self, school: SchoolEntry) -> tuple[str, ...]:
        return school.brokers or self.section.brokers

    def mqtt(self, node: str) -> MqttConfig:
        """The MQTT settings for one node (``mqtt://host:port``) of a district broker."""
        return MqttConfig(url=node, prefix=self.section.prefix, protocol=self.section.protocol)

    def select(self, names: str) -> tuple[SchoolEntry, ...]:
        """``all`` or ``ID,ID,...``; an unknown id is a usage error naming it."""
        if names.strip() == "all":
            return self.schools
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        known = {s.id: s for s in self.schools}
        unknown = [n for n in wanted if n not in known]
        if unknown or not wanted:
            raise ConfigError("--schools", [f"not a school of this district: {', '.join(unknown)}"
                                            f" (known: {', '.join(known)})"])  # fmt: skip
        return tuple(known[n] for n in wanted)


def nodes_of(url: str) -> list[str]:
    """``mqtt://h1:1883|h2:1883`` -> ``["mqtt://h1:1883", "mqtt://h2:1883"]``."""
    found = []
    for n, given in enumerate(url.split("|")):
        node = given.strip()
        # The scheme is said once: mqtt://n1:4883|n2:4883|n3:4883.
        found.append(f"mqtt://{node}" if n and "://" not in node else node)
    return found


def load_district(path: str | Path) -> District:
    """Read and validate a district file; every problem named with its place."""
    path = Path(path)
    raw = read_toml(path)
    parsed = validated(DistrictFile, raw, str(path))
    problems = []
    for n, school in enumerate(parsed.schools):
        brokers = school.brokers or parsed.district.brokers
        if not brokers:
            problems.append(f"schools[{n}]({school.id}).brokers: no broker (and none in"
                            " [district] brokers)")  # fmt: skip
        nodes = [(b, node) for b in brokers for node in nodes_of(b)]
        problems += [
            f"schools[{n}]({school.id}).brokers: not an mqtt://host[:port] URL: {node!r} (in {b!r})"
            for b, node in nodes
            if not re.match(NODE_URL, node)
        ]
    ids = [s.id for s in parsed.schools]
    problems += [f"schools: {i!r} is listed twice" for i in sorted(set(ids)) if ids.count(i) > 1]
    if problems:
        raise ConfigError(str(path), problems)
    key = Path(parsed.district.key)
    key_path = key if key.is_absolute() else path.parent / key
    return District(parsed.district, parsed.schools, key_path, parsed.console, str(path))


# --- status -------------------------------------------------------------------------------


@dataclass(slots=True)
class SchoolStatus:
    school: str
    #: ``ok``, ``stale`` (heartbeat too old, or none) or ``unreachable`` (no broker answered).
    verdict: str = "unreachable"
    state: str | None = None
    availability: str | None = None
    doors: dict[str, int] = field(default_factory=dict)
    heartbeat_age_s: float | None = None
    #: Brokers that answered, of those configured.
    reached: int = 0
    brokers: int = 0

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


async def school_status(district: District, school: SchoolEntry, timeout_s: float) -> SchoolStatus:
    """The school as its freshest district path shows it."""
    brokers = district.brokers_of(school)
    status = SchoolStatus(school.id, brokers=len(brokers))
    views = await asyncio.gather(
        *(broker_snapshot(district, url, school.id, timeout_s) for url in brokers),
        return_exceptions=True,
    )
    now = time.time()
    best: float | None = None
    for view in views:
        if isinstance(view, BaseException):
            if not isinstance(view, UplinkError):
                raise view
            continue
        status.reached += 1
        beat = view.get("heartbeat")
        at = _epoch(beat.get("at")) if isinstance(beat, dict) else None
        if best is not None and (at is None or at <= best):
            continue
        best = at
        status.state = None
        campus = view.get("state/campus")
        if isinstance(campus, dict):
            status.state = str(campus.get("state"))
            status.doors = {k: int(v) for k, v in (campus.get("doors") or {}).items()}
        if isinstance(view.get("availability"), str):
            status.availability = view["availability"]
        # state/campus changes the moment the state does; the heartbeat's copy lags a beat.
        if status.state is None and isinstance(beat, dict) and isinstance(beat.get("state"), str):
            status.state = beat["state"]
    if status.reached:
        status.heartbeat_age_s = None if best is None else round(max(0.0, now - best), 1)
        fresh = best is not None and now - best <= district.section.stale_after_s
        status.verdict = "ok" if fresh and status.availability == "online" else "stale"
    return status


async def broker_snapshot(
    district: District, url: str, site: str, timeout_s: float
) -> dict[str, Any]:
    """The school's retained topics from the first node of ``url`` that answers."""
    problem: UplinkError | None = None
    for node in nodes_of(url):
        try:
            return await snapshot(district.mqtt(node), site, timeout_s)
        except UplinkError as exc:
            problem = exc
    assert problem is not None
    raise problem


def _epoch(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --- commands -----------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    school: str
    #: ``confirmed``, ``failed`` (the school refused, or doors did not confirm) or
    #: ``unreachable`` (no final reply before the timeout).
    result: str = "unreachable"
    seconds: float | None = None
    sends: int = 0
    message: str = ""
    reply: dict[str, Any] | None = None
    #: Monotonic time of the first publish that reached a broker: what ``seconds`` counts from.
    first_sent: float | None = None
    #: The district broker node the deciding reply came through.
    via: str | None = None
    #: For a school never decided: how long it was tried, from the first send (or start).
    gave_up_s: float | None = None
    decided: asyncio.Event = field(default_factory=asyncio.Event)

    def as_json(self) -> dict[str, Any]:
        return {"school": self.school, "result": self.result, "seconds": self.seconds,
                "sends": self.sends, "message": self.message, "via": self.via,
                "gave_up_s": self.gave_up_s}  # fmt: skip


class BrokerPath:
    """One district broker: a connection kept up until the operation ends, replies routed.

    A clustered broker's nodes are tried in turn until one takes the connection. The session
    is persistent (one client id for the whole operation): a reply the school sent while
    this path was moving to another node waits in the broker's session instead of being
    lost, which matters because every later copy of the command is refused as ``replayed``
    and so never brings its own answer.
    """

    def __init__(self, district: District, url: str, sites: Sequence[str]) -> None:
        self.url = url
        self.nodes = [district.mqtt(node) for node in nodes_of(url)]
        self.prefix = district.section.prefix
        #: Command id -> its school's outcome, for the replies on ``cmd/result``.
        self.waiting: dict[str, Outcome] = {}
        self.sites = list(sites)
        self.identifier = f"gatewayd-district-{uuid.uuid4().hex[:12]}"
        self.client: aiomqtt.Client | None = None
        #: The node connected to now (``mqtt://host:port``), None while none is.
        self.node: str | None = None
        #: Connections made (a reconnect to a surviving node counts again).
        self.connections = 0
        self.up = asyncio.Event()

    def _client(self, config: MqttConfig, *, persistent: bool) -> aiomqtt.Client:
        return aiomqtt.Client(
            config.host, config.port, protocol=protocol.version(config),
            identifier=self.identifier, timeout=CONNECT_TIMEOUT_S,
            **protocol.session_options(config, persistent=persistent),
        )  # fmt: skip

    async def run(self) -> None:
        attempt = 0
        while True:
            config = self.nodes[attempt % len(self.nodes)]
            attempt += 1
            try:
                async with self._client(config, persistent=True) as client:
                    for site in self.sites:
                        await protocol.subscribe(client, config, f"{self.prefix}/{site}/cmd/result")
                    self.client, self.node = client, config.url
                    self.connections += 1
                    self.up.set()
                    async for message in client.messages:
                        self._reply(message.payload, config.url)
            except aiomqtt.MqttError:
                self.client, self.node = None, None
                self.up.clear()
                # A full round of nodes refused: pause before the next one.
                if attempt % len(self.nodes) == 0:
                    await asyncio.sleep(0.5)

    async def forget_session(self) -> None:
        """End the persistent session at the broker (best effort: it also expires there)."""
        for config in self.nodes:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(3), self._client(config, persistent=False):
                    return

    def _reply(self, payload: Any, node: str) -> None:
        try:
            reply = json.loads(payload)
        except (TypeError, ValueError):
            return
        if not isinstance(reply, dict) or reply.get("id") not in self.waiting:
            return
        outcome = self.waiting[reply["id"]]
        if outcome.decided.is_set() or reply.get("error") in NOT_FINAL:
            if not outcome.decided.is_set():
                outcome.message = f"{reply.get('error')}: {reply.get('message')}"
            return
        outcome.reply = reply
        outcome.result = "confirmed" if reply.get("ok") else "failed"
        started = outcome.first_sent or time.monotonic()
        outcome.seconds = round(time.monotonic() - started, 3)
        outcome.message = str(reply.get("message") or reply.get("error") or "")
        outcome.via = node
        outcome.decided.set()

    async def send(self, site: str, body: bytes) -> bool:
        client = self.client
        if client is None:
            return False
        try:
            await client.publish(f"{self.prefix}/{site}/cmd", body, 1, False)
        except aiomqtt.MqttError:
            return False
        return True


async def district_command(
    district: District,
    schools: Sequence[SchoolEntry],
    body: dict[str, Any],
    key: Ed25519PrivateKey,
    *,
    timeout_s: float,
    progress: Callable[[Outcome], None] | None = None,
    watch: Callable[[Sequence[Outcome]], None] | None = None,
) -> list[Outcome]:
    """Send ``body`` (no id, ts or sig yet) to every school; one outcome per school.

    ``watch(outcomes)`` is called once, before anything is sent (a live view keeps them);
    ``progress(outcome)`` after every send and when a school is decided.
    """
    from gatewayd.security.signing import signed

    started = time.monotonic()
    outcomes = {s.id: Outcome(s.id) for s in schools}
    if watch is not None:
        watch(list(outcomes.values()))
    urls = list(dict.fromkeys(u for s in schools for u in district.brokers_of(s)))
    paths = {
        url: BrokerPath(district, url, [s.id for s in schools if url in district.brokers_of(s)])
        for url in urls
    }

    async def one(school: SchoolEntry) -> None:
        outcome = outcomes[school.id]
        mine = [paths[u] for u in district.brokers_of(school)]
        command_id = uuid.uuid4().hex
        for path in mine:
            path.waiting[command_id] = outcome
        while not outcome.decided.is_set():
            fresh = signed({**body, "id": command_id, "ts": time.time()}, key, site=school.id)
            before = time.monotonic()
            payload = encode(fresh)
            # Every path at once: a path whose node hangs never delays the others.
            sent = await asyncio.gather(*(path.send(school.id, payload) for path in mine))
            if any(sent):
                outcome.sends += 1
                outcome.first_sent = outcome.first_sent or before
                if outcome.message == NO_BROKER:
                    outcome.message = ""
            elif not outcome.message:
                outcome.message = NO_BROKER
            if progress is not None:
                progress(outcome)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(district.section.resend_s if any(sent) else 0.2):
                    await outcome.decided.wait()
        if progress is not None:
            progress(outcome)

    async with asyncio.TaskGroup() as group:
        links = [group.create_task(p.run(), name=f"district:{p.url}") for p in paths.values()]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as sends:
                for school in schools:
                    sends.create_task(one(school), name=f"district:{school.id}")
        # Every school decided, or the time is up: end the connections and their sessions.
        for link in links:
            link.cancel()
    await asyncio.gather(*(p.forget_session() for p in paths.values()))
    for outcome in outcomes.values():
        if not outcome.decided.is_set():
            outcome.gave_up_s = round(time.monotonic() - (outcome.first_sent or started), 1)
            outcome.message = outcome.message or "no answer"
    return [outcomes[s.id] for s in schools]


# --- the command line ----------------------------------------------------------------------


def run_status(args: argparse.Namespace) -> int:
    """``district status``: every school's state, doors, heartbeat age and reachability."""
    district = load_district(args.config)

    async def gather() -> list[SchoolStatus]:
        return list(
            await asyncio.gather(
                *(school_status(district, s, args.timeout) for s in district.schools)
            )
        )

    rows = asyncio.run(gather())
    if args.json:
        print(json.dumps([r.as_json() for r in rows], indent=2))
    else:
        from gatewayd.app.district_view import format_status

        print(format_status(rows, color=sys.stdout.isatty()))
    return 0 if all(r.verdict == "ok" for r in rows) else 1


def run_console(args: argparse.Namespace) -> int:
    """``district console``: the district view in a browser."""
    from gatewayd.app.district_console import console_command

    return console_command(args, load_district(args.config))


def run_operate(args: argparse.Namespace) -> int:
    """``district lockdown`` and the other actions: one signed command per selected school."""
    from gatewayd.app.district_view import LiveTable, PlainProgress, format_outcomes
    from gatewayd.security.keys import load_private_key

    district = load_district(args.config)
    schools = district.select(args.schools)
    key = load_private_key(district.key_path)
    body: dict[str, Any] = {"actor": district.section.actor, "action": args.action,
                            "scope": args.scope, "params": {}}  # fmt: skip
    if getattr(args, "hazard", None):
        body["params"] = {"hazard": args.hazard}
    timeout_s = args.timeout or district.section.timeout_s
    terminal = sys.stdout.isatty()

    async def operate() -> list[Outcome]:
        if args.json:
            return await district_command(district, schools, body, key, timeout_s=timeout_s)
        if not terminal:
            plain = PlainProgress(sys.stdout)
            return await district_command(district, schools, body, key, timeout_s=timeout_s,
                                          progress=plain.progress)  # fmt: skip
        tables: list[LiveTable] = []

        def watch(outcomes: Sequence[Outcome]) -> None:
            tables.append(LiveTable(args.action, outcomes, sys.stdout).__enter__())

        try:
            return await district_command(district, schools, body, key, timeout_s=timeout_s,
                                          watch=watch)  # fmt: skip
        finally:
            for table in tables:
                table.__exit__()

    outcomes = asyncio.run(operate())
    if args.json:
        print(json.dumps([o.as_json() for o in outcomes], indent=2))
    elif terminal:
        from gatewayd.app.district_view import summary

        print(summary(outcomes, args.action))
    else:
        print(format_outcomes(outcomes, args.action, color=False))
    return 0 if all(o.result == "confirmed" for o in outcomes) else 1
