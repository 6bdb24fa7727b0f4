"""``gatewayd district ...`` on the command line; the work is in :mod:`gatewayd.app.district`.

Every ``gatewayd`` invocation builds the whole parser, so this module imports nothing but
argparse: the district file's models, the MQTT client and the rest (about 25 ms) load when a
district command runs, not for a school's ``gatewayd lockdown``.
"""

from __future__ import annotations

import argparse

ACTIONS = ("lockdown", "secure", "hold", "evacuate", "shelter", "release")


def add_district_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    district = sub.add_parser("district", help="district operations: every school at once")
    actions = district.add_subparsers(metavar="ACTION")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument("-c", "--config", required=True, help="district.toml")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = command("console", "the district view and buttons in a browser (signed-in users)")
    p.add_argument("--host", default=None, help="listen here (default: [console] host)")
    p.add_argument("--port", type=int, default=None, help="port (default: [console] port)")
    p.set_defaults(handler=_console)
    p = command("status", "every school: campus state, doors, heartbeat age, reachability")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per broker")
    p.set_defaults(handler=_status)
    for action in ACTIONS:
        p = command(action, f"{action.upper()} on every selected school")
        p.add_argument("--schools", required=True, help="all, or school ids: ID,ID,...")
        p.add_argument("--scope", default="campus", help="scope in each school (default campus)")
        p.add_argument("--timeout", type=float, default=None, help="seconds (default: file)")
        if action == "shelter":
            hazards = ["tornado", "hazmat", "earthquake", "severe_weather", "bomb"]
            p.add_argument("--hazard", required=True, choices=hazards)
        p.set_defaults(handler=_operate, action=action)


def _status(args: argparse.Namespace) -> int:
    from gatewayd.app.district import run_status

    return run_status(args)


def _console(args: argparse.Namespace) -> int:
    from gatewayd.app.district import run_console

    return run_console(args)


def _operate(args: argparse.Namespace) -> int:
    from gatewayd.app.district import run_operate

    return run_operate(args)
