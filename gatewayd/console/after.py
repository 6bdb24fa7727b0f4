"""The console's pages for after the alarm: incidents and drills with their reports, the floor
plans, and the CAP feed. Everything but a Public CAP feed needs a signed-in session."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from gatewayd.console.feeds import atom
from gatewayd.console.incidents import Incident, load_incidents
from gatewayd.console.plans import Plan, load_plans
from gatewayd.console.report import build_report, render_html
from gatewayd.console.view import GatewayLike
from gatewayd.kernel.errors import ConfigError

log = structlog.get_logger(__name__)

#: The report pages are self-contained HTML: inline style, inline SVG, never a script.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:;"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

RequireSession = Callable[[web.Request], object]


class AfterPages:
    """``/reports``, ``/reports/<id>``, ``/reports/<id>.pdf``, ``/api/plans``, ``/cap.atom``."""

    def __init__(self, gateway: GatewayLike, require_session: RequireSession) -> None:
        self.gateway = gateway
        self._session = require_session
        #: Floor plans by building, read at the first request; a plan that cannot be read
        #: leaves the page without it (and says why).
        self.plans: dict[str, Plan] | None = None
        self.plan_problems: list[str] = []

    def _load_plans(self) -> dict[str, Plan]:
        if self.plans is None:
            try:
                self.plans = load_plans(self.gateway.campus.model)
            except ConfigError as exc:
                self.plans, self.plan_problems = {}, exc.problems
                log.error("console.plans_unreadable", problems=exc.problems)
        return self.plans

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/cap.atom", self._cap_feed)
        app.router.add_get("/api/plans", self._plans)
        app.router.add_get("/api/reports", self._report_list)
        app.router.add_get("/reports", self._report_index)
        app.router.add_get("/reports/{id:[0-9]+}", self._report_page)
        app.router.add_get("/reports/{id:[0-9]+}.pdf", self._report_pdf)

    # --- floor plans -----------------------------------------------------------------------

    async def _plans(self, request: web.Request) -> web.StreamResponse:
        self._session(request)
        plans = await asyncio.to_thread(self._load_plans)
        return web.json_response(
            {
                "plans": {
                    b: {"svg": p.svg, "doors": sorted(p.doors), "rooms": len(p.rooms)}
                    for b, p in plans.items()
                },
                "problems": self.plan_problems,
            }
        )

    # --- reports ---------------------------------------------------------------------------

    async def _incidents(self) -> list[Incident]:
        # Reading the whole log is file I/O: off the loop the doors run on.
        return await asyncio.to_thread(load_incidents, self.gateway.audit_path, self.gateway.campus)

    async def _report_list(self, request: web.Request) -> web.StreamResponse:
        self._session(request)
        return web.json_response({"incidents": [_summary(i) for i in await self._incidents()]})

    async def _report_index(self, request: web.Request) -> web.StreamResponse:
        self._session(request)
        rows = "".join(
            f'<tr><td><a href="/reports/{i.id}">#{i.id}</a></td><td>{i.tag}</td>'
            f"<td>{i.started}</td><td>{_esc(i.title)}</td><td>{_ms(i.worst_secure_ms())}</td>"
            f'<td><a href="/reports/{i.id}.pdf">PDF</a></td></tr>'
            for i in reversed(await self._incidents())
        )
        body = (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<title>Incidents and drills</title><style>body{font-family:system-ui,sans-serif;"
            "margin:1rem}table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;"
            "padding:.3rem;text-align:left}</style></head><body>"
            "<p><a href='/'>Back to the console</a></p><h1>Incidents and drills</h1>"
            "<table><tr><th>report</th><th>kind</th><th>started (UTC)</th><th>what</th>"
            f"<th>slowest building secured</th><th></th></tr>{rows}</table></body></html>"
        )
        return _page(body)

    async def _chosen(self, request: web.Request) -> tuple[Incident, list[Incident]]:
        self._session(request)
        every = await self._incidents()
        wanted = request.match_info["id"]
        for incident in every:
            if incident.id == wanted:
                return incident, every
        raise web.HTTPNotFound(text=f"no incident or drill #{wanted}")

    async def _report_page(self, request: web.Request) -> web.StreamResponse:
        incident, every = await self._chosen(request)
        report = build_report(incident, every, self.gateway.campus)
        return _page(render_html(report))

    async def _report_pdf(self, request: web.Request) -> web.StreamResponse:
        from gatewayd.console.report_pdf import write_pdf

        incident, every = await self._chosen(request)
        report = build_report(incident, every, self.gateway.campus)

        def render() -> bytes:
            with tempfile.TemporaryDirectory() as folder:
                return write_pdf(report, Path(folder) / "report.pdf").read_bytes()

        body = await asyncio.to_thread(render)
        return web.Response(body=body, content_type="application/pdf")

    # --- CAP -------------------------------------------------------------------------------

    async def _cap_feed(self, request: web.Request) -> web.StreamResponse:
        """The CAP alerts as Atom: open to all when ``[cap] scope = "Public"``, else signed in."""
        cap = self.gateway.cap
        if not cap.public:
            self._session(request)
        campus = self.gateway.campus
        body = atom(cap, site=campus.site, site_name=campus.model.site.name,
                    self_url=str(request.url))  # fmt: skip
        return web.Response(body=body, content_type="application/atom+xml", charset="utf-8")


def _page(html: str) -> web.Response:
    response = web.Response(text=html, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = REPORT_CSP
    return response


def _summary(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "drill": incident.drill,
        "title": incident.title,
        "started": incident.started,
        "ended": incident.ended,
        "doors": incident.commanded,
        "failed": len(incident.failed),
        "worst_secure_ms": incident.worst_secure_ms(),
    }


def _ms(value: float | None) -> str:
    return "not secured" if value is None else f"{value:.1f} ms"


def _esc(text: str) -> str:
    from html import escape

    return escape(text)
