"""The site model: buildings, zones, devices, doors and alarm inputs, and its checks.

This is the part of a campus file every layer understands. Device settings are validated by
the model of the driver each device names (a discriminated union of the drivers the file
uses), and every reference is resolved: an unknown building, a lock on an input, two doors on
one output. Errors name the path to the field and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from gatewayd.kernel.driver import ID_PATTERN, DriverConfig
from gatewayd.kernel.errors import BadPoint, ConfigError, DriverNotFound
from gatewayd.kernel.events import ReaderSignal
from gatewayd.kernel.registry import load_driver
from gatewayd.kernel.siteinfo import SiteConfig
from gatewayd.kernel.validation import Model, describe_errors, read_toml, validated, where

#: The top-level keys of a campus file that make up the site model.
SITE_KEYS = ("site", "buildings", "zones", "devices", "doors", "inputs", "air_handlers")


class DoorKind(StrEnum):
    CLASSROOM = "classroom"
    INTERIOR = "interior"
    EXTERIOR = "exterior"
    EGRESS = "egress"


class Building(Model):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    floors: tuple[str, ...] = ("1",)
    #: An SVG floor plan (relative to the campus file): door markers by id, room numbers,
    #: readers and cameras (docs/console.md, "Floor plans").
    plan: str | None = None


class Zone(Model):
    id: str = Field(pattern=ID_PATTERN)
    building: str
    name: str = ""


class PointRef(Model):
    #: Device id.
    device: str
    #: Point address in that driver's notation, e.g. ``coil:3`` or ``input:7``.
    point: str


class Door(Model):
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
    #: How long the bolt takes to move once its output is written: a read-back that did not
    #: yet confirm is next read this long after the device acknowledged the write.
    actuation_ms: int = Field(default=0, ge=0, le=10_000)
    #: Card readers at this door (device ids): what they read may unlock it, and they show
    #: its state (docs/drivers/osdp.md).
    readers: tuple[str, ...] = ()


class InputKind(StrEnum):
    FIRE_ALARM = "fire_alarm"
    PANIC = "panic"


class AlarmInput(Model):
    id: str = Field(pattern=ID_PATTERN)
    kind: InputKind
    point: PointRef
    building: str | None = None
    room: str = ""
    #: True when the contact reads on in the alarm state.
    active_high: bool = True


class AirHandler(Model):
    """An air handler: its supply fan and outside-air damper, commanded and read back.

    SHELTER for a hazard the policy names stops the fan and closes the damper (docs/rules.md,
    "Shelter and the air"). Commands are outputs (on = fan runs, damper open); statuses are
    inputs (a current switch on the fan, an end switch on the damper; on = running, open).
    """

    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    building: str
    zone: str | None = None
    fan: PointRef
    fan_status: PointRef
    damper: PointRef | None = None
    damper_status: PointRef | None = None


class SiteFile(Model):
    """The site part of a campus file as written; devices stay raw until their drivers check."""

    site: SiteConfig
    buildings: tuple[Building, ...] = ()
    zones: tuple[Zone, ...] = ()
    devices: tuple[dict[str, Any], ...] = ()
    doors: tuple[Door, ...] = ()
    inputs: tuple[AlarmInput, ...] = ()
    air_handlers: tuple[AirHandler, ...] = ()


class Site(Model):
    """A validated site: every reference resolved, every point checked by its driver."""

    site: SiteConfig
    buildings: tuple[Building, ...]
    zones: tuple[Zone, ...]
    devices: tuple[DriverConfig, ...]
    doors: tuple[Door, ...]
    inputs: tuple[AlarmInput, ...]
    air_handlers: tuple[AirHandler, ...] = ()

    def device(self, device_id: str) -> DriverConfig:
        for dev in self.devices:
            if dev.id == device_id:
                return dev
        raise KeyError(device_id)


def check_site(site: SiteFile, raw: Mapping[str, Any]) -> tuple[dict[str, DriverConfig], list[str]]:
    """Validate each device with its driver's model and resolve every reference.

    Returns the validated devices and the problems found (empty when the site is sound).
    """
    problems: list[str] = []
    devices = _validate_devices(site.devices, raw, problems)
    # A device that is declared but invalid was reported already; references to it are not.
    declared = {str(d.get("id")) for d in site.devices} - set(devices)
    _check_references(site, devices, declared, problems)
    return devices, problems


def load_site(path: str | Path) -> Site:
    """The site model of a campus file, for tools that need no more (the simulators).

    Sections other than the site's are left to the daemon's loader, which checks them all.
    """
    path = Path(path)
    raw = read_toml(path)
    part = {k: raw[k] for k in SITE_KEYS if k in raw}
    parsed = validated(SiteFile, part, str(path), raw)
    devices, problems = check_site(parsed, raw)
    if problems:
        raise ConfigError(str(path), problems)
    return Site(
        site=parsed.site,
        buildings=parsed.buildings,
        zones=parsed.zones,
        devices=tuple(devices.values()),
        doors=parsed.doors,
        inputs=parsed.inputs,
        air_handlers=parsed.air_handlers,
    )


def _validate_devices(
    entries: Sequence[Mapping[str, Any]], raw: Mapping[str, Any], problems: list[str]
) -> dict[str, DriverConfig]:
    """Validate each device with the union of the models of the drivers the file names."""
    models: dict[str, type[DriverConfig]] = {}
    failed: set[str] = set()
    for i, entry in enumerate(entries):
        name = entry.get("driver")
        if not isinstance(name, str):
            problems.append(f"{where(('devices', i), raw)}.driver: required, a driver name")
            continue
        if name in models or name in failed:
            continue
        try:
            models[name] = load_driver(name).config_model
        except DriverNotFound as exc:
            failed.add(name)
            problems.append(f"{where(('devices', i), raw)}.driver: {exc}")
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
            problems.append(f"{where(('devices', i), raw)}.id: duplicate device id {dev.id!r}")
        devices[dev.id] = dev
    return devices


def _check_references(
    campus: SiteFile,
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
    _check_readers(campus, devices, broken, problems)
    for i, alarm in enumerate(campus.inputs):
        at = f"inputs[{i}]({alarm.id})"
        if alarm.building is not None and alarm.building not in buildings:
            problems.append(f"{at}.building: unknown building {alarm.building!r}")
        if alarm.point.device not in broken:
            _check_point(f"{at}.point", alarm.point, devices, problems, output=False)
    _check_air(campus, devices, broken, used_outputs, problems)


def _check_air(
    campus: SiteFile,
    devices: Mapping[str, DriverConfig],
    broken: set[str],
    used_outputs: dict[tuple[str, str], str],
    problems: list[str],
) -> None:
    """Air handlers: their building and zone, and outputs on devices with a priority array."""
    buildings = {b.id: b for b in campus.buildings}
    zones = {z.id for z in campus.zones}
    _unique("air_handlers", [a.id for a in campus.air_handlers], problems)
    for i, unit in enumerate(campus.air_handlers):
        at = f"air_handlers[{i}]({unit.id})"
        if unit.building not in buildings:
            problems.append(f"{at}.building: unknown building {unit.building!r}"
                            f" (expected one of: {_names(buildings)})")  # fmt: skip
        if unit.zone is not None and unit.zone not in zones:
            problems.append(f"{at}.zone: unknown zone {unit.zone!r}")
        if (unit.damper is None) != (unit.damper_status is None):
            problems.append(f"{at}: damper and damper_status go together (a damper is verified)")
        refs = (
            ("fan", unit.fan, True),
            ("fan_status", unit.fan_status, False),
            ("damper", unit.damper, True),
            ("damper_status", unit.damper_status, False),
        )
        for field, ref, output in refs:
            if ref is None or ref.device in broken:
                continue
            point = _check_point(f"{at}.{field}", ref, devices, problems, output=output)
            if output and point is not None:
                if not load_driver(devices[ref.device].driver).priority_array:
                    problems.append(
                        f"{at}.{field}.device: {ref.device!r} has no priority array; the"
                        " gateway must be able to give the air back (use BACnet)"
                    )
                    continue
                other = used_outputs.setdefault((ref.device, point), unit.id)
                if other != unit.id:
                    problems.append(f"{at}.{field}: {ref.device}/{point} already drives {other!r}")


def _check_readers(
    campus: SiteFile, devices: Mapping[str, DriverConfig], broken: set[str], problems: list[str]
) -> None:
    """Each door's readers are devices that show a reader signal, each at one door only."""
    mounted: dict[str, str] = {}
    for i, door in enumerate(campus.doors):
        for j, reader in enumerate(door.readers):
            at = f"doors[{i}]({door.id}).readers[{j}]"
            if reader in broken:
                continue
            device = devices.get(reader)
            if device is None:
                problems.append(f"{at}: unknown device {reader!r} (expected one of: "
                                f"{_names(devices)})")  # fmt: skip
                continue
            if ReaderSignal not in load_driver(device.driver).commands:
                problems.append(f"{at}: {reader!r} ({device.driver}) is not a card reader")
                continue
            other = mounted.setdefault(reader, door.id)
            if other != door.id:
                problems.append(f"{at}: reader {reader!r} is already at door {other!r}")


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
