"""Writes plausible campus config files: the demo school and large bench campuses.

Every relay board has ``doors_per_board`` locks on coils 0..n-1, door position on inputs
0..n-1, lock sense on inputs n..2n-1 and a few spare inputs for alarm contacts from 2n on.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

SPARE_INPUTS = 4


@dataclass(frozen=True)
class BuildingPlan:
    id: str
    name: str
    floors: int
    #: Doors per floor: (classroom, interior, exterior, egress).
    per_floor: tuple[int, int, int, int]


DEMO = (
    BuildingPlan("A", "Main Building", 3, (12, 3, 3, 2)),
    BuildingPlan("B", "Science Wing", 2, (10, 2, 2, 2)),
    BuildingPlan("C", "Gymnasium", 1, (2, 4, 4, 4)),
    BuildingPlan("D", "Arts Center", 1, (8, 3, 3, 2)),
)
KINDS = ("classroom", "interior", "exterior", "egress")


def _doors(plan: BuildingPlan) -> Iterator[tuple[str, str, str, str, str]]:
    """(door id, room, floor, zone, kind) for a building."""
    for floor in range(1, plan.floors + 1):
        number = floor * 100
        zone = f"{plan.id}{floor}"
        for kind, count in zip(KINDS, plan.per_floor, strict=True):
            for _ in range(count):
                number += 1
                yield f"{plan.id}-{number}", f"{plan.id}{number}", str(floor), zone, kind


def render(
    site: str,
    name: str,
    plans: tuple[BuildingPlan, ...],
    *,
    base_port: int,
    doors_per_board: int = 32,
    demo: bool = False,
    poll_interval_ms: int = 250,
) -> str:
    """The TOML text of a campus."""
    boards: list[str] = []
    doors: list[str] = []
    inputs: list[str] = []
    tables: list[str] = [
        "[site]", f'id = "{site}"', f'name = "{name}"', f"demo = {str(demo).lower()}", "",
        "[mqtt]", 'url = "mqtt://127.0.0.1:1883"', 'prefix = "gatewayd"', "",
    ]
    for plan in plans:
        floors = ", ".join(f'"{f}"' for f in range(1, plan.floors + 1))
        tables += ["[[buildings]]", f'id = "{plan.id}"', f'name = "{plan.name}"',
                   f"floors = [{floors}]", ""]
        for level in range(1, plan.floors + 1):
            tables += ["[[zones]]", f'id = "{plan.id}{level}"', f'building = "{plan.id}"',
                       f'name = "{plan.name}, floor {level}"', ""]
        first_board = len(boards)
        slot = doors_per_board
        for door_id, room, floor, zone, kind in _doors(plan):
            if slot == doors_per_board:
                boards.append(f"relay-{plan.id.lower()}{len(boards) - first_board + 1}")
                slot = 0
            board = boards[-1]
            locked = str(kind in ("exterior", "egress")).lower()
            doors.append(
                f'  {{ id = "{door_id}", room = "{room}", building = "{plan.id}",'
                f' floor = "{floor}", zone = "{zone}", kind = "{kind}",'
                f" normally_locked = {locked},"
                f' lock = {{ device = "{board}", point = "coil:{slot}" }},'
                f' position = {{ device = "{board}", point = "input:{slot}" }},'
                f' sense = {{ device = "{board}", point = "input:{doors_per_board + slot}" }} }},'
            )
            slot += 1
        spare = 2 * doors_per_board
        office = boards[first_board]
        inputs += [
            f'  {{ id = "fire-{plan.id}", kind = "fire_alarm", building = "{plan.id}",'
            f' point = {{ device = "{office}", point = "input:{spare}" }} }},',
            f'  {{ id = "panic-{plan.id}", kind = "panic", building = "{plan.id}",'
            f' room = "office", point = {{ device = "{office}", point = "input:{spare + 1}" }} }},',
        ]
    for i, board in enumerate(boards):
        tables += [
            "[[devices]]", f'id = "{board}"', 'driver = "modbus_relay"', 'host = "127.0.0.1"',
            f"port = {base_port + i}", f"coils = {doors_per_board}",
            f"inputs = {2 * doors_per_board + SPARE_INPUTS}",
            f"poll_interval_ms = {poll_interval_ms}", "",
        ]
    head = [
        f"# {name}: {len(doors)} doors on {len(boards)} relay boards.",
        "# Written by `python -m simulators gen`. Each board: locks on coils 0..31, door",
        "# position on inputs 0..31 (on = closed), lock sense on inputs 32..63 (on = locked),",
        "# alarm contacts from input 64. TOML wants top-level arrays before any [table].",
        "",
        "# Doors: room as signed on the wall; kind is classroom, interior, exterior or egress.",
        "doors = [", *doors, "]", "",
        "# Alarm contacts wired to relay-board inputs.",
        "inputs = [", *inputs, "]", "",
    ]
    return "\n".join(head + tables)


def bench_plans(doors: int, per_board: int) -> tuple[BuildingPlan, ...]:
    """Buildings of four floors each, enough for ``doors`` doors (all classrooms but a few)."""
    plans = []
    per_building = per_board * 4
    for b in range((doors + per_building - 1) // per_building):
        left = min(per_building, doors - b * per_building)
        per_floor = max(1, left // 4)
        plans.append(BuildingPlan(f"B{b + 1:02d}", f"Building {b + 1}", 4,
                                  (per_floor - 3, 1, 1, 1)))
    return tuple(plans)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--site", default="demo-school")
    parser.add_argument("--name", default="Lincoln High School (demo)")
    parser.add_argument("--doors", type=int, default=0, help="bench campus of N doors")
    parser.add_argument("--base-port", type=int, default=15020)
    parser.add_argument("--demo", action="store_true", help="mark the site as a demo")
    parser.add_argument("--poll-interval-ms", type=int, default=250)
    args = parser.parse_args(argv)
    plans = bench_plans(args.doors, 32) if args.doors else DEMO
    print(render(args.site, args.name, plans, base_port=args.base_port, demo=args.demo,
                 poll_interval_ms=args.poll_interval_ms))
