"""Writes plausible campus config files: the demo school and large bench campuses.

Every relay board has ``doors_per_board`` locks on coils 0..n-1, door position on inputs
0..n-1, lock sense on inputs n..2n-1 and a few spare inputs for alarm contacts from 2n on.
A BACnet building has one controller: lock ``binary-output:i``, position
``binary-input:i``, lock sense ``binary-input:n+i``. Its alarm contacts are wired to the
first relay board of the campus, as they would be to the office panel.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SPARE_INPUTS = 4
DEMO_KEYS = Path(__file__).resolve().parents[1] / "configs" / "demo-keys" / "actors.toml"
KINDS = ("classroom", "interior", "exterior", "egress")


@dataclass(frozen=True)
class BuildingPlan:
    id: str
    name: str
    floors: int
    #: Doors per floor: (classroom, interior, exterior, egress).
    per_floor: tuple[int, int, int, int]
    #: Doors on one BACnet controller instead of relay boards.
    bacnet: bool = False


@dataclass(frozen=True)
class CampusPlan:
    buildings: tuple[BuildingPlan, ...]
    #: (camera id, building, room) for each ONVIF camera.
    cameras: tuple[tuple[str, str, str], ...] = ()
    radio: bool = False
    #: Tables appended verbatim (site policy, security).
    extra: tuple[str, ...] = field(default=())


DEMO = CampusPlan(
    buildings=(
        BuildingPlan("A", "Main Building", 3, (12, 3, 3, 2)),
        BuildingPlan("B", "Science Wing", 2, (10, 2, 2, 2)),
        BuildingPlan("C", "Gymnasium", 1, (2, 4, 4, 4), bacnet=True),
        BuildingPlan("D", "Arts Center", 1, (8, 3, 3, 2)),
    ),
    cameras=(
        ("cam-a-entrance", "A", "A-lobby"),
        ("cam-b-hall", "B", "B-hall"),
        ("cam-c-gym", "C", "C-court"),
    ),
    radio=True,
)

#: The demo school on relay boards only (no BACnet, cameras or radio), for lean tests.
DEMO_RELAYS = CampusPlan(
    tuple(BuildingPlan(b.id, b.name, b.floors, b.per_floor) for b in DEMO.buildings)
)

DEMO_POLICY = """\
# SRP site policy (docs/rules.md lists every key and its default).
[policy]
lockdown_perimeter = true
evacuate_interior = true
# Fire alarm release delay, approved by the fire authority only: off (0) by default.
fire_verification_s = 0
budget_ms = 100
rules = "demo-rules.toml"
"""

DEMO_SCHEDULES = """\
# Door schedules (docs/rules.md, "Door schedules"): wall-clock windows in the site's zone at
# the schedule priority (12): every SRP state, a fire alarm and a responder override beat them.
[schedules]
timezone = "America/Chicago"
# Days without school: no window opens a door (each is an EXDATE of every window).
holidays = ["2026-11-26/2026-11-27", "2026-12-21/2027-01-01", "2027-01-18"]

[[schedules.windows]]
id = "main-arrival"
name = "Main entrance, morning arrival"
doors = ["A-116"]
start = "07:30"
end = "08:15"
rrule = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"

[[schedules.windows]]
id = "main-dismissal"
name = "Main entrance, dismissal"
doors = ["A-116", "A-117"]
start = "14:45"
end = "15:30"
rrule = "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
"""

DEMO_AIR = """\
# The building automation controller: air handlers (docs/rules.md, "Shelter and the air").
[[devices]]
id = "bacnet-hvac"
driver = "bacnet"
address = "127.0.0.1:15040"
device_instance = 3100
local_address = "127.0.0.1:0"

# SHELTER for hazmat stops each fan and closes its outside air through the controller's
# priority array (priority 5), read back by the fan's current switch and the damper's end
# switch; release relinquishes, and a fire alarm's smoke control always has the air.
[[air_handlers]]
id = "ahu-a"
name = "AHU-1, Main Building"
building = "A"
fan = { device = "bacnet-hvac", point = "binary-output:1000" }
fan_status = { device = "bacnet-hvac", point = "binary-input:1000" }
damper = { device = "bacnet-hvac", point = "binary-output:1001" }
damper_status = { device = "bacnet-hvac", point = "binary-input:1001" }

[[air_handlers]]
id = "ahu-b"
name = "AHU-2, Science Wing"
building = "B"
fan = { device = "bacnet-hvac", point = "binary-output:1002" }
fan_status = { device = "bacnet-hvac", point = "binary-input:1002" }
damper = { device = "bacnet-hvac", point = "binary-output:1003" }
damper_status = { device = "bacnet-hvac", point = "binary-input:1003" }
"""


def _doors(plan: BuildingPlan) -> Iterator[tuple[str, str, str, str, str]]:
    """(door id, room, floor, zone, kind) for a building."""
    for floor in range(1, plan.floors + 1):
        number = floor * 100
        zone = f"{plan.id}{floor}"
        for kind, count in zip(KINDS, plan.per_floor, strict=True):
            for _ in range(count):
                number += 1
                yield f"{plan.id}-{number}", f"{plan.id}{number}", str(floor), zone, kind


def _door_line(
    door: tuple[str, str, str, str, str], building: str, device: str, points: tuple[str, str, str]
) -> str:
    door_id, room, floor, zone, kind = door
    locked = str(kind in ("exterior", "egress")).lower()
    lock, position, sense = points
    return (
        f'  {{ id = "{door_id}", room = "{room}", building = "{building}",'
        f' floor = "{floor}", zone = "{zone}", kind = "{kind}", normally_locked = {locked},'
        f' lock = {{ device = "{device}", point = "{lock}" }},'
        f' position = {{ device = "{device}", point = "{position}" }},'
        f' sense = {{ device = "{device}", point = "{sense}" }} }},'
    )


class _Writer:
    """Accumulates the parts of a campus file."""

    def __init__(self, base_port: int, per_board: int, poll_interval_ms: int) -> None:
        self.port = base_port
        self.per_board = per_board
        self.poll_ms = poll_interval_ms
        self.boards: list[str] = []
        self.doors: list[str] = []
        self.inputs: list[str] = []
        self.tables: list[str] = []
        self.controllers = 0

    def next_port(self) -> int:
        self.port += 1
        return self.port - 1

    def relay_building(self, plan: BuildingPlan) -> None:
        first = len(self.boards)
        slot = self.per_board
        for door in _doors(plan):
            if slot == self.per_board:
                self.add_board(f"relay-{plan.id.lower()}{len(self.boards) - first + 1}")
                slot = 0
            n = self.per_board
            self.doors.append(
                _door_line(
                    door,
                    plan.id,
                    self.boards[-1],
                    (f"coil:{slot}", f"input:{slot}", f"input:{n + slot}"),
                )
            )
            slot += 1

    def add_board(self, board: str) -> None:
        self.boards.append(board)
        self.tables += [
            "[[devices]]",
            f'id = "{board}"',
            'driver = "modbus_relay"',
            'host = "127.0.0.1"',
            f"port = {self.next_port()}",
            f"coils = {self.per_board}",
            f"inputs = {2 * self.per_board + SPARE_INPUTS}",
            f"poll_interval_ms = {self.poll_ms}",
            "",
        ]

    def bacnet_building(self, plan: BuildingPlan) -> None:
        doors = list(_doors(plan))
        device = f"bacnet-{plan.id.lower()}1"
        self.controllers += 1
        self.tables += [
            "[[devices]]",
            f'id = "{device}"',
            'driver = "bacnet"',
            f'address = "127.0.0.1:{self.next_port()}"',
            f"device_instance = {3000 + self.controllers}",
            'local_address = "127.0.0.1:0"',
            f'building = "{plan.id}"',
            "",
        ]
        n = len(doors)
        for i, door in enumerate(doors):
            self.doors.append(
                _door_line(
                    door,
                    plan.id,
                    device,
                    (f"binary-output:{i}", f"binary-input:{i}", f"binary-input:{n + i}"),
                )
            )

    def alarm_inputs(self, plan: BuildingPlan, board: str, spare: int) -> None:
        self.inputs += [
            f'  {{ id = "fire-{plan.id}", kind = "fire_alarm", building = "{plan.id}",'
            f' point = {{ device = "{board}", point = "input:{spare}" }} }},',
            f'  {{ id = "panic-{plan.id}", kind = "panic", building = "{plan.id}",'
            f' room = "office", point = {{ device = "{board}", point = "input:{spare + 1}" }} }},',
        ]

    def camera(self, ident: str, building: str, room: str) -> None:
        self.tables += [
            "[[devices]]",
            f'id = "{ident}"',
            'driver = "onvif_camera"',
            'host = "127.0.0.1"',
            f"port = {self.next_port()}",
            'username = "admin"',
            'password = "demo-camera"',
            'snapshot_dir = "var/snapshots"',
            f'building = "{building}"',
            f'room = "{room}"',
            "",
        ]

    def radio(self, site_label: str) -> None:
        self.tables += [
            "[[devices]]",
            'id = "psap-radio"',
            'driver = "psap_radio"',
            f'url = "socket://127.0.0.1:{self.next_port()}"',
            f'site_label = "{site_label}"',
            "heartbeat_s = 5",
            "",
        ]


def render(
    site: str,
    name: str,
    plan: CampusPlan,
    *,
    base_port: int,
    doors_per_board: int = 32,
    demo: bool = False,
    poll_interval_ms: int = 250,
) -> str:
    """The TOML text of a campus."""
    out = _Writer(base_port, doors_per_board, poll_interval_ms)
    for building in plan.buildings:
        floors = ", ".join(f'"{f}"' for f in range(1, building.floors + 1))
        out.tables += [
            "[[buildings]]",
            f'id = "{building.id}"',
            f'name = "{building.name}"',
            f"floors = [{floors}]",
            "",
        ]
        for level in range(1, building.floors + 1):
            out.tables += [
                "[[zones]]",
                f'id = "{building.id}{level}"',
                f'building = "{building.id}"',
                f'name = "{building.name}, floor {level}"',
                "",
            ]
    spare = 2 * doors_per_board
    for building in plan.buildings:
        if building.bacnet:
            out.bacnet_building(building)
            continue
        out.relay_building(building)
        out.alarm_inputs(building, out.boards[_first(out, building)], spare)
    office = out.boards[0] if out.boards else ""
    for n, building in enumerate(b for b in plan.buildings if b.bacnet):
        out.alarm_inputs(building, office, spare + 2 + 2 * n)
    for camera in plan.cameras:
        out.camera(*camera)
    if plan.radio:
        out.radio(name.split(" (", maxsplit=1)[0])
    head = [
        f"# {name}: {len(out.doors)} doors on {len(out.boards)} relay boards"
        f" and {out.controllers} BACnet controllers.",
        "# Written by `python -m gatewayd.simulators.campusgen`. Each relay board: locks on"
        " coils 0..31,",
        "# door position on inputs 0..31 (on = closed), lock sense on inputs 32..63 (on = locked),",
        "# alarm contacts from input 64. TOML wants top-level arrays before any [table].",
        "",
        "# Doors: room as signed on the wall; kind is classroom, interior, exterior or egress.",
        "doors = [",
        *out.doors,
        "]",
        "",
        "# Alarm contacts wired to relay-board inputs.",
        "inputs = [",
        *out.inputs,
        "]",
        "",
        "[site]",
        f'id = "{site}"',
        f'name = "{name}"',
        f"demo = {str(demo).lower()}",
        "",
        "[mqtt]",
        'url = "mqtt://127.0.0.1:1883"',
        'prefix = "gatewayd"',
        "",
    ]
    return "\n".join([*head, *out.tables, *plan.extra])


def _first(out: _Writer, building: BuildingPlan) -> int:
    """Index of a relay building's first board (its office board)."""
    prefix = f"relay-{building.id.lower()}"
    return next(i for i, b in enumerate(out.boards) if b.startswith(prefix))


def demo_security() -> str:
    """The ``[security]`` table naming the shipped DEMO actors (configs/demo-keys)."""
    return DEMO_KEYS.read_text(encoding="utf-8")


def demo_plan() -> CampusPlan:
    """The demo campus with its policy and the DEMO actors."""
    return CampusPlan(
        DEMO.buildings,
        DEMO.cameras,
        DEMO.radio,
        (DEMO_POLICY, DEMO_SCHEDULES, DEMO_AIR, demo_security()),
    )


def bench_plans(doors: int, per_board: int) -> CampusPlan:
    """Buildings of four floors each, enough for ``doors`` doors (all classrooms but a few)."""
    plans = []
    per_building = per_board * 4
    for b in range((doors + per_building - 1) // per_building):
        left = min(per_building, doors - b * per_building)
        per_floor = max(4, left // 4)
        plans.append(
            BuildingPlan(f"B{b + 1:02d}", f"Building {b + 1}", 4, (per_floor - 3, 1, 1, 1))
        )
    return CampusPlan(tuple(plans))


def with_demo_actors(plan: CampusPlan) -> CampusPlan:
    """The plan with the DEMO actors, for a demo-mode site whose commands are demo-signed."""
    return CampusPlan(plan.buildings, plan.cameras, plan.radio, (*plan.extra, demo_security()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gatewayd.simulators.campusgen", description=__doc__
    )
    parser.add_argument("--site", default="demo-school")
    parser.add_argument("--name", default="Lincoln High School (demo)")
    parser.add_argument("--doors", type=int, default=0, help="bench campus of N doors")
    parser.add_argument("--base-port", type=int, default=15020)
    parser.add_argument("--demo", action="store_true", help="the demo campus, in demo mode")
    parser.add_argument("--poll-interval-ms", type=int, default=250)
    args = parser.parse_args(argv)
    plan = bench_plans(args.doors, 32) if args.doors else demo_plan()
    print(
        render(
            args.site,
            args.name,
            plan,
            base_port=args.base_port,
            demo=args.demo,
            poll_interval_ms=args.poll_interval_ms,
        )
    )


if __name__ == "__main__":
    main()
