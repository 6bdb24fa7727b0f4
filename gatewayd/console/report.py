"""The after-action report of one incident or drill: figures, an SVG chart, HTML.

The figures come from :mod:`gatewayd.console.incidents` (the audit log); this module only
arranges them. The HTML is one self-contained file (inline CSS and SVG, no script), so it can
be mailed, archived, or served by the console as it is. The PDF is in
:mod:`gatewayd.console.report_pdf`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from html import escape

from gatewayd.console.incidents import Incident, SecureTime
from gatewayd.kernel.campus import Campus


@dataclass(frozen=True, slots=True)
class Report:
    """One incident with what the report says about it."""

    site: str
    site_name: str
    incident: Incident
    #: Earlier drills of the site, oldest first (for a drill: is time to secure improving?).
    previous_drills: list[Incident]

    @property
    def triggered_by(self) -> list[str]:
        return _unique(s.actor for s in self.incident.steps if s.what == "trigger")[:1]

    @property
    def released_by(self) -> list[str]:
        return _unique(s.actor for s in self.incident.steps if s.what == "release")

    @property
    def radio(self) -> list[dict[str, object]]:
        return [a for a in self.incident.actions if a.get("kind") == "radio"]

    @property
    def snapshots(self) -> list[dict[str, object]]:
        return [a for a in self.incident.actions if a.get("kind") == "camera"]

    @property
    def responder_unlocks(self) -> int:
        return sum(1 for s in self.incident.steps if s.what == "responder" and "unlock" in s.text)

    def buildings(self) -> list[SecureTime]:
        return [t for k, t in self.incident.secure.items() if k.startswith("building/")]

    def zones(self) -> list[SecureTime]:
        return [t for k, t in self.incident.secure.items() if k.startswith("zone/")]

    def trend(self) -> str | None:
        """A sentence comparing this drill's time to secure with the previous drill's."""
        now = self.incident.worst_secure_ms()
        earlier = [d for d in self.previous_drills if d.worst_secure_ms() is not None]
        if not self.incident.drill or now is None or not earlier:
            return None
        before = earlier[-1].worst_secure_ms()
        assert before is not None
        change = (now - before) / before * 100 if before else 0.0
        word = "faster" if now < before else "slower" if now > before else "the same as"
        return (f"Time to secure {now:.1f} ms: {abs(change):.0f}% {word} than the previous"
                f" drill ({before:.1f} ms, {_day(earlier[-1].started)}).")  # fmt: skip


def build_report(incident: Incident, every: list[Incident], campus: Campus) -> Report:
    earlier = [i for i in every if i.drill and int(i.id) < int(incident.id)]
    return Report(campus.site, campus.model.site.name, incident, earlier)


def duration_s(incident: Incident) -> float | None:
    if incident.ended is None:
        return None
    return _epoch(incident.ended) - _epoch(incident.started)


# --- SVG -----------------------------------------------------------------------------------


def bar_chart_svg(rows: list[tuple[str, float | None]], *, title: str, unit: str = "ms") -> str:
    """A horizontal bar chart; a row without a value says NOT SECURED in red."""
    width, label_w, row_h, top = 640, 150, 24, 30
    height = top + row_h * max(1, len(rows)) + 10
    peak = max((v for _, v in rows if v is not None), default=0.0) or 1.0
    bar_w = width - label_w - 90
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}"'
           f' height="{height}" viewBox="0 0 {width} {height}" role="img"'
           f' aria-label="{escape(title)}">',
           f'<text x="0" y="18" font-size="14" font-weight="bold">{escape(title)}'
           "</text>"]  # fmt: skip
    for n, (label, value) in enumerate(rows):
        y = top + n * row_h
        out.append(f'<text x="0" y="{y + 16}" font-size="12">{escape(label)}</text>')
        if value is None:
            out.append(f'<text x="{label_w}" y="{y + 16}" font-size="12" fill="#b00020"'
                       ' font-weight="bold">NOT SECURED</text>')  # fmt: skip
            continue
        w = max(1.0, value / peak * bar_w)
        out.append(f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}"'
                   ' fill="#1f5fa8"/>')  # fmt: skip
        out.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" font-size="12">'
                   f"{value:.1f} {unit}</text>")  # fmt: skip
    out.append("</svg>")
    return "\n".join(out)


def secure_chart_svg(report: Report) -> str:
    rows = [(t.scope, t.ms) for t in report.buildings() + report.zones()]
    return bar_chart_svg(rows, title="Time to secure, from the trigger (per building and zone)")


def trend_chart_svg(report: Report) -> str:
    drills = [*report.previous_drills, report.incident]
    rows = [(f"{_day(d.started)} #{d.id}", d.worst_secure_ms()) for d in drills[-10:]]
    return bar_chart_svg(rows, title="This drill and the previous ones: slowest building")


# --- HTML ----------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #111; max-width: 60rem; }
h1 { margin: 0 0 .3rem 0; font-size: 1.5rem; }
.tag { display: inline-block; padding: .15rem .6rem; font-weight: bold; color: #fff; }
.tag.REAL { background: #b00020; }
.tag.DRILL { background: repeating-linear-gradient(45deg, #1f5fa8 0 8px, #2d73c4 8px 16px); }
table { border-collapse: collapse; margin: .5rem 0 1rem 0; width: 100%; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top;
         font-size: .9rem; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.failed td { background: #fde7ea; }
.what { font-weight: bold; white-space: nowrap; }
.chart { max-width: 100%; height: auto; }
.note { color: #444; font-size: .85rem; }
"""


def render_html(report: Report) -> str:
    incident = report.incident
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>After-action report #{incident.id} - {escape(report.site_name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f'<p><span class="tag {incident.tag}">{incident.tag}</span></p>',
        f"<h1>After-action report #{incident.id}: {escape(incident.title)}</h1>",
        f"<p>{escape(report.site_name)} ({escape(report.site)})</p>",
        _summary(report),
        "<h2>Time to secure</h2>",
        _secure_table(report),
        secure_chart_svg(report),
        '<p class="note">Measured by the gateway from the command\'s arrival (or the alarm'
        " input's change) to each door's confirmed read-back.</p>",
        _failed_table(incident),
        _comparison(report),
        "<h2>Timeline</h2>",
        _timeline(incident),
        '<p class="note">From the gateway\'s hash-chained audit log'
        " (<code>gatewayd audit verify</code> checks it); each line names its record's seq.</p>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def summary_rows(report: Report) -> list[tuple[str, str]]:
    """The summary's (label, value) rows, shared by the HTML and the PDF."""
    incident = report.incident
    took = duration_s(incident)
    radio = report.radio
    acked = sum(1 for r in radio if r.get("ok"))
    shots = report.snapshots
    return [
        ("Kind", "drill (exercise)" if incident.drill else "real incident"),
        ("States", ", ".join(f"{s} {scope}" for s, scope in incident.states)),
        ("Started", incident.started),
        ("Ended", incident.ended or "still in force when the report was made"),
        ("Duration", f"{took:.1f} s" if took is not None else "-"),
        ("Triggered by", ", ".join(report.triggered_by) or "-"),
        ("Released by", ", ".join(report.released_by) or "-"),
        ("Doors commanded", str(incident.commanded)),
        ("Doors confirmed", str(incident.confirmed)),
        ("Doors failed", str(len(incident.failed))),
        ("Slowest building secured", _ms(incident.worst_secure_ms())),
        ("Radio alerts (acknowledged)", f"{len(radio)} ({acked})"),
        ("Camera snapshots", str(sum(1 for s in shots if s.get("ok")))),
        ("Responder unlocks", str(report.responder_unlocks)),
    ]


def _summary(report: Report) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>"
                   for k, v in summary_rows(report))  # fmt: skip
    return f'<table class="summary">{rows}</table>'


def _secure_table(report: Report) -> str:
    rows = []
    for t in report.buildings() + report.zones():
        cls = ' class="failed"' if t.ms is None else ""
        rows.append(f"<tr{cls}><td>{escape(t.scope)}</td><td class='num'>{t.doors}</td>"
                    f"<td class='num'>{t.confirmed}</td><td class='num'>{len(t.failed)}</td>"
                    f"<td class='num'>{escape(_ms(t.ms))}</td></tr>")  # fmt: skip
    if not rows:
        return "<p>No door was commanded.</p>"
    head = ("<tr><th>scope</th><th>doors</th><th>confirmed</th><th>failed</th>"
            "<th>time to secure</th></tr>")  # fmt: skip
    return f'<table class="secure">{head}{"".join(rows)}</table>'


def _failed_table(incident: Incident) -> str:
    if not incident.failed:
        return ""
    rows = "".join(f'<tr class="failed"><td>{escape(d)}</td><td>{escape(why)}</td></tr>'
                   for d, why in sorted(incident.failed.items()))  # fmt: skip
    return f"<h2>Doors that failed</h2><table><tr><th>door</th><th>why</th></tr>{rows}</table>"


def _comparison(report: Report) -> str:
    if not report.incident.drill:
        return ""
    if not report.previous_drills:
        return "<h2>Previous drills</h2><p>This is the site's first drill on record.</p>"
    rows = "".join(
        f"<tr><td>#{d.id}</td><td>{escape(d.started)}</td>"
        f"<td>{escape(', '.join(f'{s} {c}' for s, c in d.states))}</td>"
        f"<td class='num'>{d.commanded}</td><td class='num'>{len(d.failed)}</td>"
        f"<td class='num'>{escape(_ms(d.worst_secure_ms()))}</td></tr>"
        for d in report.previous_drills[-10:]
    )
    head = ("<tr><th>drill</th><th>started</th><th>states</th><th>doors</th><th>failed</th>"
            "<th>slowest building</th></tr>")  # fmt: skip
    trend = report.trend()
    return (f"<h2>Previous drills</h2><p>{escape(trend or '')}</p>"
            f"<table>{head}{rows}</table>{trend_chart_svg(report)}")  # fmt: skip


def _timeline(incident: Incident) -> str:
    rows = "".join(
        f"<tr{' class=failed' if s.what == 'failed' else ''}><td>{escape(s.ts)}</td>"
        f'<td class="what">{escape(s.what)}</td><td>{escape(s.text)}</td>'
        f"<td class='num'>{s.seq}</td></tr>"
        for s in incident.steps
    )
    head = "<tr><th>time (UTC)</th><th>what</th><th>detail</th><th>seq</th></tr>"
    return f"<table>{head}{rows}</table>"


def _ms(value: float | None) -> str:
    return "not secured" if value is None else f"{value:.1f} ms"


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _day(ts: str) -> str:
    return ts[:10]


def _unique(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
