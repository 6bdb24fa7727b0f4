"""The responder pack: a PDF for walkthroughs and for the PSAP, one section per building.

Each building's floor plan (drawn by svglib from the cleaned SVG, with every door's id beside
its marker), then the doors (id, room as signed, floor, zone, kind), badge readers and cameras
with where they are on the plan. A building without a plan still gets its tables.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from reportlab.graphics.shapes import Drawing
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, PageBreak, Paragraph, SimpleDocTemplate, Spacer
from svglib.svglib import svg2rlg

from gatewayd.console.plans import SVG_NS, Plan, svg_text
from gatewayd.console.report_pdf import styles, table
from gatewayd.kernel.campus import Campus

PAGE = landscape(A4)
FRAME_W = PAGE[0] - 35 * mm
FRAME_H = PAGE[1] - 85 * mm


def labelled_svg(plan: Plan) -> bytes:
    """The plan with each door id written beside its marker (what a responder reads)."""
    root = ET.fromstring(plan.svg)
    for marker in plan.doors.values():
        label = ET.SubElement(root, f"{{{SVG_NS}}}text", {
            "x": f"{marker.x + 11:.1f}", "y": f"{marker.y - 6:.1f}", "font-size": "9",
            "fill": "#b00020"})  # fmt: skip
        label.text = marker.id
    for what, markers in (("reader", plan.readers), ("camera", plan.cameras)):
        for marker in markers:
            label = ET.SubElement(root, f"{{{SVG_NS}}}text", {
                "x": f"{marker.x + 8:.1f}", "y": f"{marker.y + 14:.1f}", "font-size": "8",
                "fill": "#00838f" if what == "camera" else "#6a1b9a"})  # fmt: skip
            label.text = marker.id
    return svg_text(root).encode()


def plan_drawing(plan: Plan) -> Drawing:
    drawing = svg2rlg(io.BytesIO(labelled_svg(plan)))
    if drawing is None:
        raise ValueError(f"{plan.source}: svglib could not draw the plan")
    scale = min(FRAME_W / drawing.width, FRAME_H / drawing.height)
    drawing.width, drawing.height = drawing.width * scale, drawing.height * scale
    drawing.scale(scale, scale)
    return drawing


def write_responder_pack(campus: Campus, plans: dict[str, Plan], path: Path) -> Path:
    sheet = styles()
    site = campus.model.site
    story: list[Flowable] = [
        Paragraph(f"Responder pack: {site.name}", sheet["title"]),
        Paragraph(
            f"Site {campus.site}. Door ids as on the gateway and its console; rooms as"
            " signed on the wall. Readers and cameras as placed on each plan.",
            sheet["body"],
        ),
    ]
    for building in campus.buildings.values():
        plan = plans.get(building.id)
        story += [PageBreak(), Paragraph(f"Building {building.id}: {building.name}",
                                         sheet["h2"])]  # fmt: skip
        if plan is not None:
            story.append(plan_drawing(plan))
        else:
            story.append(Paragraph("No floor plan on file for this building.", sheet["body"]))
        story.append(PageBreak())
        doors: list[list[Any]] = [["door", "room", "floor", "zone", "kind", "on the plan"]]
        for door in campus.doors.values():
            if door.building != building.id:
                continue
            marker = plan.doors.get(door.id) if plan else None
            where = f"({marker.x:.0f}, {marker.y:.0f})" if marker else "-"
            doors.append([door.id, door.room, door.floor, door.zone or "-", str(door.kind),
                          where])  # fmt: skip
        story.append(table(doors, [35 * mm, 30 * mm, 20 * mm, 25 * mm, 30 * mm, 35 * mm],
                            sheet["small"]))  # fmt: skip
        if plan is not None and (plan.readers or plan.cameras):
            story.append(Spacer(1, 4 * mm))
            kit = [["kind", "id", "on the plan"]]
            kit += [["reader", m.id, f"({m.x:.0f}, {m.y:.0f})"] for m in plan.readers]
            kit += [["camera", m.id, f"({m.x:.0f}, {m.y:.0f})"] for m in plan.cameras]
            story.append(table(kit, [30 * mm, 60 * mm, 40 * mm], sheet["small"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = SimpleDocTemplate(str(path), pagesize=PAGE, title=f"Responder pack: {site.name}",
                            leftMargin=15 * mm, rightMargin=15 * mm)  # fmt: skip
    doc.build(story)
    return path
