"""``gatewayd report``: after-action reports (HTML and PDF) from the gateway's audit log, and
the responder pack (every floor plan with door ids, room numbers, readers and cameras)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from gatewayd.kernel.errors import ConfigError

DEFAULT_CONFIG = os.environ.get("GATEWAYD_CONFIG", "/etc/gatewayd/campus.toml")
EXIT_OK, EXIT_NOTHING = 0, 1


def add_report_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    help_text = "after-action reports of incidents and drills (HTML + PDF), the responder pack"
    p = sub.add_parser("report", help=help_text, description=help_text)
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="campus config file")
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="the gateway's state directory (default: the config's, or $GATEWAYD_STATE_DIR)",
    )
    p.add_argument("--out", default="reports", metavar="DIR", help="where to write (reports/)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--incident", metavar="ID", help="one incident or drill, by its number")
    which.add_argument("--last", action="store_true", help="the latest incident or drill")
    which.add_argument("--since", metavar="DATE", help="every one since DATE (YYYY-MM-DD[THH:MM])")
    which.add_argument("--list", action="store_true", help="list them all, write nothing")
    which.add_argument(
        "--responder-pack",
        action="store_true",
        help="a PDF with every floor plan, door ids, room numbers, readers and cameras",
    )
    p.set_defaults(handler=report_command)


def since_epoch(text: str) -> float:
    """``2026-12-01`` or ``2026-12-01T08:00`` (UTC unless an offset is given)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError("--since", [f"{text!r} is not a date (YYYY-MM-DD[THH:MM])"]) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def report_command(args: argparse.Namespace) -> int:
    from gatewayd.console.incidents import load_incidents
    from gatewayd.console.report import build_report, render_html
    from gatewayd.console.report_pdf import write_pdf
    from gatewayd.kernel.campus import Campus
    from gatewayd.service.config import load_config

    config = load_config(args.config)
    state_dir = Path(args.state_dir) if args.state_dir else Path(config.state_dir)
    out = Path(args.out)
    campus = Campus(config)
    if args.responder_pack:
        from gatewayd.console.plans import load_plans
        from gatewayd.console.responder_pack import write_responder_pack

        path = write_responder_pack(campus, load_plans(config), out / "responder-pack.pdf")
        print(f"wrote {path}")
        return EXIT_OK
    audit = state_dir / config.security.audit_log
    if not audit.exists():
        print(f"gatewayd: no audit log at {audit} (--state-dir?)", file=sys.stderr)
        return EXIT_NOTHING
    every = load_incidents(audit, campus)
    if args.list:
        for incident in every:
            secured = incident.worst_secure_ms()
            took = "not secured" if secured is None else f"{secured:.1f} ms"
            print(f"{incident.id:>8}  {incident.tag:<5}  {incident.started}  {took:>12}"
                  f"  {incident.title}")  # fmt: skip
        return EXIT_OK if every else EXIT_NOTHING
    if args.incident is not None:
        chosen = [i for i in every if i.id == str(args.incident)]
    elif args.last:
        chosen = every[-1:]
    else:
        start = since_epoch(args.since)
        chosen = [
            i
            for i in every
            if datetime.fromisoformat(i.started.replace("Z", "+00:00")).timestamp() >= start
        ]
    if not chosen:
        print(f"gatewayd: no incident or drill matches in {audit}", file=sys.stderr)
        return EXIT_NOTHING
    out.mkdir(parents=True, exist_ok=True)
    for incident in chosen:
        report = build_report(incident, every, campus)
        html = out / f"incident-{incident.id}.html"
        html.write_text(render_html(report), encoding="utf-8")
        pdf = write_pdf(report, out / f"incident-{incident.id}.pdf")
        print(f"wrote {html} and {pdf}  ({incident.title})")
    return EXIT_OK
