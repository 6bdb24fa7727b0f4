"""Floor plans for a generated campus: one SVG per building, in the format the console reads.

Per floor a corridor with the rooms on both sides, each room's door on the corridor wall, the
exterior and egress doors on the building's end walls, a badge reader beside every exterior
door and the building's cameras at the floor-1 entrance. The format (docs/console.md, "Floor
plans"): any element with ``data-door`` is that door's marker (``cx``/``cy`` or ``x``/``y``),
``<text class="room">`` a room number as signed on the wall, ``data-reader`` and ``data-camera``
mark readers and cameras; everything else is drawing.

``python -m gatewayd.simulators.floorplans configs/demo-campus.toml configs/plans`` writes the
demo's plans.
"""

from __future__ import annotations

import argparse
from html import escape
from pathlib import Path

from gatewayd.kernel.site import SITE_KEYS, Door, DoorKind, SiteFile
from gatewayd.kernel.validation import read_toml

WIDTH = 1000
FLOOR_H = 300
ROOM_H = 100
CORRIDOR_H = 50


def plan_svg(site: SiteFile, building_id: str) -> str:
    building = next(b for b in site.buildings if b.id == building_id)
    floors = list(building.floors)
    height = 40 + FLOOR_H * len(floors)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}"'
        f' width="{WIDTH}" height="{height}">',
        f"<title>Building {escape(building.id)}: {escape(building.name)}</title>",
        f'<text x="10" y="26" font-size="20" font-weight="bold">Building {escape(building.id)}'
        f" - {escape(building.name)}</text>",
    ]
    cameras = [str(d["id"]) for d in site.devices if d.get("building") == building_id
               and d.get("driver") == "onvif_camera"]  # fmt: skip
    for n, floor in enumerate(floors):
        top = 40 + n * FLOOR_H
        doors = [d for d in site.doors if d.building == building_id and d.floor == floor]
        out += _floor(floor, top, doors, cameras if n == 0 else [])
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _floor(floor: str, top: int, doors: list[Door], cameras: list[str]) -> list[str]:
    corridor_y = top + 30 + ROOM_H
    out = [
        f'<text x="10" y="{top + 20}" font-size="14">Floor {escape(floor)}</text>',
        f'<rect x="40" y="{top + 30}" width="{WIDTH - 80}" height="{2 * ROOM_H + CORRIDOR_H}"'
        ' fill="#ffffff" stroke="#222222" stroke-width="4"/>',
        f'<rect x="40" y="{corridor_y}" width="{WIDTH - 80}" height="{CORRIDOR_H}"'
        ' fill="#eeeeee" stroke="#888888" stroke-width="1"/>',
        f'<text x="{WIDTH // 2}" y="{corridor_y + 30}" font-size="12" text-anchor="middle"'
        f' fill="#666666">corridor, floor {escape(floor)}</text>',
    ]
    rooms = [d for d in doors if d.kind in (DoorKind.CLASSROOM, DoorKind.INTERIOR)]
    ends = [d for d in doors if d.kind in (DoorKind.EXTERIOR, DoorKind.EGRESS)]
    upper, lower = rooms[: (len(rooms) + 1) // 2], rooms[(len(rooms) + 1) // 2 :]
    for row, side in ((upper, "top"), (lower, "bottom")):
        if not row:
            continue
        room_w = (WIDTH - 80) / len(row)
        for i, door in enumerate(row):
            x = 40 + i * room_w
            y = top + 30 if side == "top" else corridor_y + CORRIDOR_H
            door_y = corridor_y if side == "top" else corridor_y + CORRIDOR_H
            out += [
                f'<rect x="{x:.1f}" y="{y}" width="{room_w:.1f}" height="{ROOM_H}"'
                ' fill="none" stroke="#444444" stroke-width="2"/>',
                f'<text class="room" x="{x + room_w / 2:.1f}" y="{y + ROOM_H / 2 + 5:.1f}"'
                f' font-size="16" text-anchor="middle">{escape(door.room)}</text>',
                _marker(door, x + room_w / 2, door_y),
            ]
    for i, door in enumerate(ends):
        left = i % 2 == 0
        x = 40 if left else WIDTH - 40
        y = corridor_y + 12 + (i // 2) * 26 - (len(ends) // 4) * 13
        label_x = x - 34 if left else x + 34
        out += [
            _marker(door, x, y),
            f'<text class="room" x="{label_x}" y="{y + 4}" font-size="11"'
            f' text-anchor="middle">{escape(door.room)}</text>',
        ]
        if door.kind is DoorKind.EXTERIOR:
            reader_x = x + 14 if left else x - 22
            out.append(f'<rect data-reader="reader-{escape(door.id)}" x="{reader_x}" y="{y - 4}"'
                       ' width="8" height="8" fill="#6a1b9a"/>')  # fmt: skip
    for i, camera in enumerate(cameras):
        out.append(f'<circle data-camera="{escape(camera)}" cx="{80 + i * 30}"'
                   f' cy="{corridor_y + 10}" r="6" fill="#00838f"/>')  # fmt: skip
    return out


def _marker(door: Door, x: float, y: float) -> str:
    return (f'<circle data-door="{escape(door.id)}" cx="{x:.1f}" cy="{y:.1f}" r="9"'
            ' fill="#999999" stroke="#000000" stroke-width="1"/>')  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="campus file")
    parser.add_argument("out", help="folder for <building>.svg")
    args = parser.parse_args(argv)
    raw = read_toml(Path(args.config))
    config = SiteFile.model_validate({k: raw[k] for k in SITE_KEYS if k in raw})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for building in config.buildings:
        path = out / f"{building.id}.svg"
        path.write_text(plan_svg(config, building.id), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
