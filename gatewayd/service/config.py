"""Typed campus configuration (one TOML file), validated at load with precise errors.

Every error names the file, the path to the field (``doors[12](A-101).lock.device``) and what
was expected. Device settings are validated by the model of the driver each device names.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from gatewayd.console.config import ConsoleConfig
from gatewayd.kernel.driver import ID_PATTERN, DriverConfig
from gatewayd.kernel.errors import BadPoint, ConfigError, DriverNotFound
from gatewayd.kernel.registry import load_driver
from gatewayd.security.auth import SecurityConfig
from gatewayd.security.tls import TlsConfig


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DoorKind(StrEnum):
    CLASSROOM = "classroom"
    INTERIOR = "interior"
    EXTERIOR = "exterior"
    EGRESS = "egress"


class SiteConfig(_Model):
    #: Site id, used in every MQTT topic (``gatewayd/<id>/...``).
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    name: str
    #: Demo mode: shipped demo credentials are accepted. Never on a real site.
    demo: bool = False


class MqttConfig(_Model):
    #: Broker URL: ``mqtt://host:port``, or ``mqtts://host:port`` with ``[mqtt.tls]``.
    url: str = Field(default="mqtt://127.0.0.1:1883", pattern=r"^mqtts?://[^/:]+(:\d+)?/?$")
    prefix: str = Field(default="gatewayd", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = Field(default=15, ge=5, le=600)
    #: ``[mqtt.tls]``: CA, client certificate and verification, for ``mqtts://``. File paths
    #: are resolved against the campus file's folder at load.
    tls: TlsConfig = TlsConfig()

    @property
    def tls_enabled(self) -> bool:
        return self.url.startswith("mqtts:")

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rstrip("/").split(":")[0]

    @property
    def port(self) -> int:
        rest = self.url.split("://", 1)[1].rstrip("/")
        return int(rest.split(":")[1]) if ":" in rest else (8883 if self.tls_enabled else 1883)


class Building(_Model):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    floors: tuple[str, ...] = ("1",)


class Zone(_Model):
    id: str = Field(pattern=ID_PATTERN)
    building: str
    name: str = ""


class PointRef(_Model):
    #: Device id.
    device: str
    #: Point address in that driver's notation, e.g. ``coil:3`` or ``input:7``.
    point: str


class Door(_Model):
    id: str = Field(pattern=ID_PATTERN)
    #: Room or door number as signed on the wall, what a responder looks for.
    room: str
    building: str
    floor: str = "1"
    zone: str | None = None
    kind: DoorKind
    name: str = ""
    #: The output that drives the lock (on = locked).
    lock: PointRef
    #: Door position switch (on = closed), if fitted.
    position: PointRef | None = None
    #: Lock sense / bolt monitor (on = locked), if fitted; else the output is read back.
    sense: PointRef | None = None
    #: State with no active source: exterior doors are usually locked, classrooms not.
    normally_locked: bool = False
    #: How long the lock may take to confirm before the door is reported unconfirmed.
    confirm_timeout_ms: int = Field(default=1000, ge=10, le=30_000)


class InputKind(StrEnum):
    FIRE_ALARM = "fire_alarm"
    PANIC = "panic"


class SrpState(StrEnum):
    """The Standard Response Protocol states a scope can be in."""

    NORMAL = "normal"
    HOLD = "hold"
    SECURE = "secure"
    LOCKDOWN = "lockdown"
    EVACUATE = "evacuate"
    SHELTER = "shelter"


class Hazard(StrEnum):
    """What a SHELTER is for; each hazard has its own door actions in the policy."""

    TORNADO = "tornado"
    HAZMAT = "hazmat"
    EARTHQUAKE = "earthquake"
    SEVERE_WEATHER = "severe_weather"
    BOMB = "bomb"


class DoorActions(_Model):
    """Door kinds a state locks and kinds it releases (unlocks); a kind may be in one only."""

    lock: frozenset[DoorKind] = frozenset()
    unlock: frozenset[DoorKind] = frozenset()

    @model_validator(mode="after")
    def _disjoint(self) -> DoorActions:
        both = self.lock & self.unlock
        if both:
            raise ValueError(f"kinds both locked and unlocked: {', '.join(sorted(both))}")
        return self


def _shelter_defaults() -> dict[Hazard, DoorActions]:
    return {h: DoorActions(lock=frozenset({DoorKind.EXTERIOR})) for h in Hazard}


class PolicyConfig(_Model):
    """Site policy for the SRP engine (``[policy]``); every key has a safe default."""

    hold: DoorActions = DoorActions(lock=frozenset({DoorKind.CLASSROOM}))
    secure: DoorActions = DoorActions(lock=frozenset({DoorKind.EXTERIOR}))
    lockdown: DoorActions = DoorActions(lock=frozenset({DoorKind.CLASSROOM, DoorKind.INTERIOR}))
    #: LOCKDOWN also locks the perimeter (exterior and egress doors).
    lockdown_perimeter: bool = True
    evacuate: DoorActions = DoorActions(unlock=frozenset({DoorKind.EGRESS}))
    #: EVACUATE also releases interior doors, so people can move to the exits.
    evacuate_interior: bool = True
    #: SHELTER door actions per hazard; hazards not listed lock exterior doors.
    shelter: dict[Hazard, DoorActions] = Field(default_factory=_shelter_defaults)
    #: A fire alarm releases every door, not only egress doors.
    fire_release_all: bool = False
    #: Seconds a fire alarm must stay active before doors release (fire authority approval).
    fire_verification_s: float = Field(default=0.0, ge=0.0, le=120.0)
    #: What a wired panic button does, and to which scope (its building, or the campus).
    panic_state: SrpState = SrpState.LOCKDOWN
    panic_scope: Literal["building", "campus"] = "building"
    #: Responder unlock: default (momentary) and longest allowed duration.
    responder_momentary_s: float = Field(default=5.0, gt=0.0, le=60.0)
    responder_max_s: float = Field(default=300.0, gt=0.0, le=3600.0)
    #: Longest drill.
    drill_max_s: float = Field(default=3600.0, gt=0.0, le=86_400.0)
    #: Trigger -> all doors confirmed; a slower trigger raises a ``budget`` event.
    budget_ms: float = Field(default=100.0, gt=0.0, le=60_000.0)
    #: Declarative rule file (TOML), relative to the campus file.
    rules: str | None = None

    @model_validator(mode="after")
    def _bounds(self) -> PolicyConfig:
        if self.responder_momentary_s > self.responder_max_s:
            raise ValueError("responder_momentary_s must not exceed responder_max_s")
        if self.panic_state in (SrpState.NORMAL, SrpState.SHELTER):
            raise ValueError("panic_state must be hold, secure, lockdown or evacuate")
        return self

    def shelter_for(self, hazard: Hazard) -> DoorActions:
        return self.shelter.get(hazard, DoorActions(lock=frozenset({DoorKind.EXTERIOR})))


class AlarmInput(_Model):
    id: str = Field(pattern=ID_PATTERN)
    kind: InputKind
    point: PointRef
    building: str | None = None
    room: str = ""
    #: True when the contact reads on in the alarm state.
    active_high: bool = True


class CampusFile(_Model):
    """The file as written, with devices still raw until their drivers validate them."""

    site: SiteConfig
    mqtt: MqttConfig = MqttConfig()
    buildings: tuple[Building, ...] = ()
    zones: tuple[Zone, ...] = ()
    devices: tuple[dict[str, Any], ...] = ()
    doors: tuple[Door, ...] = ()
    inputs: tuple[AlarmInput, ...] = ()
    policy: PolicyConfig = PolicyConfig()
    #: Actors, keys, replay cache and audit log (docs/security.md).
    security: SecurityConfig = SecurityConfig()
    #: The web console; off unless the section is present.
    console: ConsoleConfig | None = None
    #: Where the safety state and outbox live; relative to the config file.
    state_dir: str = "var"


class Config(_Model):
    """A validated campus: every reference resolved, every point checked by its driver."""

    source: str
    site: SiteConfig
    mqtt: MqttConfig
    buildings: tuple[Building, ...]
    zones: tuple[Zone, ...]
    devices: tuple[DriverConfig, ...]
    doors: tuple[Door, ...]
    inputs: tuple[AlarmInput, ...]
    state_dir: str
    policy: PolicyConfig = PolicyConfig()
    security: SecurityConfig = SecurityConfig()
    #: The web console; off unless the section is present.
    console: ConsoleConfig | None = None

    def device(self, device_id: str) -> DriverConfig:
        for dev in self.devices:
            if dev.id == device_id:
                return dev
        raise KeyError(device_id)


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's document; unreadable, non-UTF-8 or malformed is a :class:`ConfigError`."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text: {exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"TOML syntax error: {exc}"]) from exc


def load_config(path: str | Path) -> Config:
    """Read and validate a campus file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    return parse_config(read_toml(path), source=str(path))


def parse_config(raw: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate an already-parsed TOML document."""
    try:
        campus = CampusFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, describe_errors(exc, raw)) from exc
    problems: list[str] = []
    devices = _validate_devices(campus.devices, raw, problems)
    # A device that is declared but invalid was reported already; references to it are not.
    declared = {str(d.get("id")) for d in campus.devices} - set(devices)
    _check_references(campus, devices, declared, problems)
    if problems:
        raise ConfigError(source, problems)
    # systemd's StateDirectory= is passed in the environment and wins over the file.
    state_dir = Path(os.environ.get("GATEWAYD_STATE_DIR") or campus.state_dir)
    if not state_dir.is_absolute() and source != "<config>":
        state_dir = Path(source).resolve().parent / state_dir
    policy, mqtt, security = campus.policy, campus.mqtt, campus.security
    if source != "<config>":
        base = Path(source).resolve().parent
        if policy.rules is not None:
            policy = policy.model_copy(update={"rules": _beside(base, policy.rules)})
        mqtt = mqtt.model_copy(update={"tls": _tls_beside(base, mqtt.tls)})
        if security.console_keys is not None:
            security = security.model_copy(
                update={"console_keys": _beside(base, security.console_keys)})
    return Config(
        source=source,
        policy=policy,
        security=security,
        console=campus.console,
        site=campus.site,
        mqtt=mqtt,
        buildings=campus.buildings,
        zones=campus.zones,
        devices=tuple(devices.values()),
        doors=campus.doors,
        inputs=campus.inputs,
        state_dir=str(state_dir),
    )


def _beside(base: Path, name: str) -> str:
    """A path from the campus file, relative to the file's folder."""
    return name if Path(name).is_absolute() else str(base / name)


def _tls_beside(base: Path, tls: TlsConfig) -> TlsConfig:
    files = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
    return tls.model_copy(
        update={k: _beside(base, v) for k, v in files.items() if v is not None})


def _validate_devices(
    entries: Sequence[Mapping[str, Any]], raw: Mapping[str, Any], problems: list[str]
) -> dict[str, DriverConfig]:
    """Validate each device with the union of the models of the drivers the file names."""
    models: dict[str, type[DriverConfig]] = {}
    failed: set[str] = set()
    for i, entry in enumerate(entries):
        name = entry.get("driver")
        if not isinstance(name, str):
            problems.append(f"{_where(('devices', i), raw)}.driver: required, a driver name")
            continue
        if name in models or name in failed:
            continue
        try:
            models[name] = load_driver(name).config_model
        except DriverNotFound as exc:
            failed.add(name)
            problems.append(f"{_where(('devices', i), raw)}.driver: {exc}")
    devices: dict[str, DriverConfig] = {}
    if not models:
        return devices
    union: Any = next(iter(models.values()))
    if len(models) > 1:
        union = Annotated[Union[tuple(models.values())], Field(discriminator="driver")]  # noqa: UP007
    adapter: TypeAdapter[DriverConfig] = TypeAdapter(union)
    for i, entry in enumerate(entries):
        # A non-string driver (a list, a table) was reported above and is not hashable.
        if str(entry.get("driver")) not in models:
            continue
        try:
            dev = adapter.validate_python(entry)
        except ValidationError as exc:
            problems.extend(
                describe_errors(exc, raw, prefix=("devices", i), tagged=len(models) > 1)
            )
            continue
        if dev.id in devices:
            problems.append(f"{_where(('devices', i), raw)}.id: duplicate device id {dev.id!r}")
        devices[dev.id] = dev
    return devices


def _check_references(
    campus: CampusFile,
    devices: Mapping[str, DriverConfig],
    broken: set[str],
    problems: list[str],
) -> None:
    buildings = {b.id: b for b in campus.buildings}
    if not buildings:
        problems.append("buildings: at least one [[buildings]] table is required")
    _unique("buildings", [b.id for b in campus.buildings], problems)
    _unique("zones", [z.id for z in campus.zones], problems)
    _unique("doors", [d.id for d in campus.doors], problems)
    _unique("inputs", [x.id for x in campus.inputs], problems)
    zones = {z.id: z for z in campus.zones}
    for i, zone in enumerate(campus.zones):
        if zone.building not in buildings:
            problems.append(
                f"zones[{i}]({zone.id}).building: unknown building {zone.building!r}"
                f" (expected one of: {_names(buildings)})"
            )
    used_outputs: dict[tuple[str, str], str] = {}
    for i, door in enumerate(campus.doors):
        at = f"doors[{i}]({door.id})"
        building = buildings.get(door.building)
        if building is None:
            problems.append(
                f"{at}.building: unknown building {door.building!r}"
                f" (expected one of: {_names(buildings)})"
            )
        elif door.floor not in building.floors:
            problems.append(
                f"{at}.floor: building {building.id!r} has no floor {door.floor!r}"
                f" (expected one of: {', '.join(building.floors)})"
            )
        if door.zone is not None:
            found = zones.get(door.zone)
            if found is None:
                problems.append(
                    f"{at}.zone: unknown zone {door.zone!r} (expected one of: {_names(zones)})"
                )
            elif found.building != door.building:
                problems.append(
                    f"{at}.zone: zone {found.id!r} is in building {found.building!r},"
                    f" not {door.building!r}"
                )
        for field, ref in (("lock", door.lock), ("position", door.position), ("sense", door.sense)):
            if ref is None:
                continue
            if ref.device != door.lock.device and door.lock.device in devices:
                # Read-back after a group write comes from the board that was written.
                problems.append(
                    f"{at}.{field}.device: must be the lock's device {door.lock.device!r}"
                    f" (got {ref.device!r})"
                )
                continue
            if ref.device in broken:
                continue
            point = _check_point(f"{at}.{field}", ref, devices, problems, output=field == "lock")
            if field == "lock" and point is not None:
                other = used_outputs.setdefault((ref.device, point), door.id)
                if other != door.id:
                    problems.append(
                        f"{at}.lock: {ref.device}/{point} already drives door {other!r}"
                    )
    for i, alarm in enumerate(campus.inputs):
        at = f"inputs[{i}]({alarm.id})"
        if alarm.building is not None and alarm.building not in buildings:
            problems.append(f"{at}.building: unknown building {alarm.building!r}")
        if alarm.point.device not in broken:
            _check_point(f"{at}.point", alarm.point, devices, problems, output=False)


def _check_point(
    at: str,
    ref: PointRef,
    devices: Mapping[str, DriverConfig],
    problems: list[str],
    *,
    output: bool,
) -> str | None:
    device = devices.get(ref.device)
    if device is None:
        problems.append(
            f"{at}.device: unknown device {ref.device!r} (expected one of: {_names(devices)})"
        )
        return None
    driver = load_driver(device.driver)
    try:
        point = driver.parse_point(ref.point)
    except BadPoint as exc:
        problems.append(f"{at}.point: {exc}")
        return None
    if output and not driver.is_output(point):
        problems.append(f"{at}.point: {ref.point!r} on {device.id!r} is an input, not an output")
        return None
    missing = driver.check_points(device, [point])
    problems.extend(f"{at}.point: {why}" for why in missing)
    return None if missing else point


def _unique(section: str, ids: Iterable[str], problems: list[str]) -> None:
    seen: set[str] = set()
    for i, ident in enumerate(ids):
        if ident in seen:
            problems.append(f"{section}[{i}].id: duplicate id {ident!r}")
        seen.add(ident)


def _names(items: Mapping[str, object]) -> str:
    names = sorted(items)
    shown = ", ".join(names[:12])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 12 else "") if names else "none"


def _where(loc: Sequence[int | str], raw: Any) -> str:
    """Render a pydantic location as ``doors[3](A-101).lock``, naming list items by id."""
    out = ""
    node: Any = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list | tuple) and part < len(node) else None
            if isinstance(node, Mapping) and isinstance(node.get("id"), str):
                out += f"({node['id']})"
        else:
            out += f".{part}" if out else part
            node = node.get(part) if isinstance(node, Mapping) else None
    return out or "(top level)"


def describe_errors(
    exc: ValidationError,
    raw: Mapping[str, Any],
    prefix: tuple[int | str, ...] = (),
    *,
    tagged: bool = False,
) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        # A discriminated union puts the tag (the driver name) first in the location.
        inner = tuple(err["loc"])[1:] if tagged else tuple(err["loc"])
        loc = prefix + inner
        problems.append(f"{_where(loc, raw)}: {_expectation(err)}")
    return problems


def _expectation(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return f"unknown field (value {err.get('input')!r}); check the spelling"
    message = str(err["msg"])
    return f"{message} (got {err.get('input')!r})"

