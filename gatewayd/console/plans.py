"""Floor plans: one SVG per building (``[[buildings]] plan``), read, checked and cleaned.

The format: any element with ``data-door="<door id>"`` is that door's marker, placed by its
``cx``/``cy`` (or ``x``/``y``); ``<text class="room">`` is a room number as signed on the
wall; ``data-reader`` and ``data-camera`` mark badge readers and cameras; everything else is
drawing. A plan is checked against the campus (every marker a door of its building, every
door of the building on the plan) and cleaned to a small set of drawing elements and
attributes before a browser sees it: no script, no link, no style, no event handler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from xml.etree import ElementTree as ET

from gatewayd.kernel.errors import ConfigError
from gatewayd.kernel.site import Building, Door

SVG_NS = "http://www.w3.org/2000/svg"
#: A plan file larger than this is refused (a plan is drawing, not a photograph).
MAX_PLAN_BYTES = 2 * 1024 * 1024
ALLOWED_TAGS = frozenset(
    {"svg", "g", "rect", "line", "polyline", "polygon", "path", "circle", "ellipse", "text",
     "title", "tspan"}
)  # fmt: skip
ALLOWED_ATTRS = frozenset(
    {"x", "y", "x1", "y1", "x2", "y2", "width", "height", "points", "d", "cx", "cy", "r", "rx",
     "ry", "fill", "stroke", "stroke-width", "font-size", "font-weight", "text-anchor",
     "transform", "class", "viewBox", "data-door", "data-reader", "data-camera", "opacity"}
)  # fmt: skip


class SiteLike(Protocol):
    @property
    def buildings(self) -> tuple[Building, ...]: ...
    @property
    def doors(self) -> tuple[Door, ...]: ...


@dataclass(frozen=True, slots=True)
class Marker:
    id: str
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Plan:
    building: str
    source: str
    #: The cleaned SVG document, markers included (``data-door`` on each door's marker).
    svg: str
    width: float
    height: float
    doors: dict[str, Marker]
    rooms: list[Marker] = field(default_factory=list)
    readers: list[Marker] = field(default_factory=list)
    cameras: list[Marker] = field(default_factory=list)


def load_plans(site: SiteLike) -> dict[str, Plan]:
    """Every building's plan, checked; a :class:`ConfigError` names every problem at once."""
    plans: dict[str, Plan] = {}
    problems: list[str] = []
    for building in site.buildings:
        if building.plan is None:
            continue
        doors = [d for d in site.doors if d.building == building.id]
        try:
            plans[building.id] = parse_plan(Path(building.plan), building.id, doors)
        except ConfigError as exc:
            problems += [
                f"buildings({building.id}).plan {building.plan}: {p}" for p in exc.problems
            ]
    if problems:
        raise ConfigError("floor plans", problems)
    return plans


def parse_plan(path: Path, building: str, doors: list[Door]) -> Plan:
    try:
        size = path.stat().st_size
        if size > MAX_PLAN_BYTES:
            raise ConfigError(str(path), [f"{size} bytes; a plan may have {MAX_PLAN_BYTES}"])
        root = ET.fromstring(path.read_bytes())
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from exc
    except ET.ParseError as exc:
        raise ConfigError(str(path), [f"not XML: {exc}"]) from exc
    if _local(root.tag) != "svg":
        raise ConfigError(str(path), [f"the root element is <{_local(root.tag)}>, not <svg>"])
    _clean(root)
    width, height = _size(root)
    markers: dict[str, dict[str, Marker]] = {"door": {}, "reader": {}, "camera": {}}
    rooms: list[Marker] = []
    problems: list[str] = []
    for element in root.iter():
        for what, found in markers.items():
            ident = element.get(f"data-{what}")
            if ident is None:
                continue
            point = _point(element)
            if point is None:
                problems.append(f"{what} {ident}: its marker has no cx/cy or x/y")
            elif ident in found:
                problems.append(f"{what} {ident}: two markers")
            else:
                found[ident] = Marker(ident, *point)
        if _local(element.tag) == "text" and "room" in (element.get("class") or "").split():
            point = _point(element)
            if point is not None:
                rooms.append(Marker("".join(element.itertext()).strip(), *point))
    wanted = {d.id for d in doors}
    for ident in sorted(set(markers["door"]) - wanted):
        problems.append(f"door {ident}: no such door in building {building}")
    missing = sorted(wanted - set(markers["door"]))
    if missing:
        named = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
        problems.append(f"{len(missing)} doors of building {building} have no marker: {named}")
    if problems:
        raise ConfigError(str(path), problems)
    return Plan(building, str(path), svg_text(root), width, height,
                markers["door"], rooms, list(markers["reader"].values()),
                list(markers["camera"].values()))  # fmt: skip


def with_default_namespace(element: ET.Element, namespace: str) -> ET.Element:
    """Elements of ``namespace`` written unprefixed under an ``xmlns`` (in place).

    ElementTree's own ``default_namespace`` refuses unprefixed attributes, and its global
    prefix registry is shared by every module: the tree says what it means instead.
    """
    prefix = f"{{{namespace}}}"
    for node in element.iter():
        if node.tag.startswith(prefix):
            node.tag = node.tag[len(prefix) :]
    element.set("xmlns", namespace)
    return element


def svg_text(root: ET.Element) -> str:
    return ET.tostring(with_default_namespace(root, SVG_NS), encoding="unicode")


def _clean(element: ET.Element) -> None:
    """Drop every element and attribute outside the drawing subset (recursively)."""
    for child in list(element):
        if _local(child.tag) not in ALLOWED_TAGS:
            element.remove(child)
        else:
            _clean(child)
    for name in list(element.attrib):
        if name not in ALLOWED_ATTRS:
            del element.attrib[name]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _size(root: ET.Element) -> tuple[float, float]:
    box = (root.get("viewBox") or "").replace(",", " ").split()
    try:
        if len(box) == 4:
            return float(box[2]), float(box[3])
        return float(root.get("width", "")), float(root.get("height", ""))
    except ValueError as exc:
        raise ConfigError("plan", ["the <svg> needs a viewBox (or width and height)"]) from exc


def _point(element: ET.Element) -> tuple[float, float] | None:
    for xs, ys in (("cx", "cy"), ("x", "y")):
        x, y = element.get(xs), element.get(ys)
        if x is not None and y is not None:
            try:
                return float(x), float(y)
            except ValueError:
                return None
    return None
