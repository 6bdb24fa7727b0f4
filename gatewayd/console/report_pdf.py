"""The after-action report as PDF, with ReportLab (pure Python; its own charts, no SVG step).

ReportLab rather than WeasyPrint: WeasyPrint needs Pango and its system libraries on the box,
ReportLab installs as a wheel and renders the same figures (table, bar chart, timeline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reportlab.graphics.charts.barcharts import HorizontalBarChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from gatewayd.console.report import Report, summary_rows

RED = colors.HexColor("#b00020")
BLUE = colors.HexColor("#1f5fa8")
GRID = TableStyle(
    [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f2f2f2")),
    ]
)


def styles() -> dict[str, ParagraphStyle]:
    sheet = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=sheet["BodyText"])
    return {
        "title": ParagraphStyle("title", parent=sheet["Title"]),
        "h2": ParagraphStyle("h2", parent=sheet["Heading2"]),
        "body": body,
        "small": ParagraphStyle("small", parent=body, fontSize=7.5, leading=9),
        "tag": ParagraphStyle("tag", parent=sheet["Heading1"], textColor=colors.white),
    }


def chart(rows: list[tuple[str, float | None]], title: str) -> Drawing:
    """Horizontal bars in ms; a row without a value is drawn as 0 and labelled NOT SECURED."""
    height = 40 + 18 * max(1, len(rows))
    drawing = Drawing(170 * mm, height)
    bars = HorizontalBarChart()
    bars.x, bars.y = 90, 10
    bars.width, bars.height = int(170 * mm - 150), height - 40
    bars.data = [[v or 0.0 for _, v in rows] or [0.0]]
    bars.categoryAxis.categoryNames = [
        label + ("  NOT SECURED" if value is None else "") for label, value in rows
    ] or ["-"]
    bars.categoryAxis.labels.fontSize = 7
    bars.categoryAxis.reverseDirection = 1
    bars.valueAxis.valueMin = 0
    bars.valueAxis.labels.fontSize = 7
    bars.bars[0].fillColor = BLUE
    bars.barLabelFormat = "%.1f ms"
    bars.barLabels.fontSize = 7
    bars.barLabels.nudge = 18
    drawing.add(bars)
    drawing.add(String(0, height - 12, title, fontSize=9, fontName="Helvetica-Bold"))
    return drawing


def table(rows: list[list[Any]], widths: list[float], style: ParagraphStyle) -> Table:
    cells = [[Paragraph(str(c), style) for c in row] for row in rows]
    table = Table(cells, colWidths=widths, repeatRows=1)
    table.setStyle(GRID)
    return table


def write_pdf(report: Report, path: Path) -> Path:
    sheet = styles()
    incident = report.incident
    story: list[Flowable] = []
    tag = Table([[Paragraph(incident.tag, sheet["tag"])]], colWidths=[40 * mm])
    tag.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), BLUE if incident.drill else RED)]))
    summary = [["", ""], *[[k, v] for k, v in summary_rows(report)]]
    story += [
        tag,
        Paragraph(f"After-action report #{incident.id}: {incident.title}", sheet["title"]),
        Paragraph(f"{report.site_name} ({report.site})", sheet["body"]),
        table(summary, [55 * mm, 115 * mm], sheet["small"]),
        Paragraph("Time to secure", sheet["h2"]),
    ]
    scopes = report.buildings() + report.zones()
    rows: list[list[Any]] = [["scope", "doors", "confirmed", "failed", "time to secure"]]
    rows += [[t.scope, t.doors, t.confirmed, len(t.failed),
              "not secured" if t.ms is None else f"{t.ms:.1f} ms"] for t in scopes]  # fmt: skip
    story += [
        table(rows, [50 * mm, 25 * mm, 25 * mm, 25 * mm, 45 * mm], sheet["small"]),
        Spacer(1, 4 * mm),
        chart([(t.scope, t.ms) for t in scopes], "Time to secure, from the trigger"),
    ]
    if incident.failed:
        story.append(Paragraph("Doors that failed", sheet["h2"]))
        failed = [["door", "why"], *[[d, w] for d, w in sorted(incident.failed.items())]]
        story.append(table(failed, [40 * mm, 130 * mm], sheet["small"]))
    if incident.drill:
        story.append(Paragraph("Previous drills", sheet["h2"]))
        story.append(Paragraph(report.trend() or "No earlier drill with a time to secure.",
                               sheet["body"]))  # fmt: skip
        drills = [*report.previous_drills[-9:], incident]
        story.append(chart([(f"{d.started[:10]} #{d.id}", d.worst_secure_ms()) for d in drills],
                           "Slowest building, this drill and the previous ones"))  # fmt: skip
    story.append(Paragraph("Timeline", sheet["h2"]))
    timeline: list[list[Any]] = [["time (UTC)", "what", "detail", "seq"]]
    timeline += [[s.ts, s.what, s.text, s.seq] for s in incident.steps]
    story.append(table(timeline, [38 * mm, 20 * mm, 100 * mm, 12 * mm], sheet["small"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = SimpleDocTemplate(str(path), pagesize=A4, title=f"After-action report #{incident.id}",
                            leftMargin=18 * mm, rightMargin=18 * mm)  # fmt: skip
    doc.build(story)
    return path
