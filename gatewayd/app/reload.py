"""``gatewayd reload``: check the campus file, then have the running daemon apply it (SIGHUP).

Also the schedule lines ``gatewayd check`` prints. Imports nothing heavy at module level: the
operator commands' fast path loads this module too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatewayd.service.config import Config

EXIT_OK, EXIT_REFUSED = 0, 1


def add_reload_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("reload", "validate the campus file, then have the running daemon apply it"
                " (schedules change live; SIGHUP)")  # fmt: skip
    p.add_argument(
        "--pid",
        type=int,
        default=None,
        help="the daemon's process id (default: from its pid file in the state dir)",
    )
    p.set_defaults(handler=reload_handler)


def schedule_lines(config: Config, wall_s: float | None = None) -> list[str]:
    """The schedules and the next transitions of each, as ``check`` and ``reload`` print them."""
    from gatewayd.rules.schedules import Calendar, describe

    if config.schedules is None:
        return []
    schedules = config.schedules
    calendar = Calendar(schedules)
    head = (f"schedules {len(calendar.windows)} windows in {schedules.timezone};"
            f" {len(schedules.closed_days())} holidays")  # fmt: skip
    upcoming = calendar.transitions(time.time() if wall_s is None else wall_s, 4)
    return [head, *(f"  next    {line}" for line in describe(upcoming))]


def reload_handler(args: argparse.Namespace) -> int:
    import signal

    from gatewayd.app.daemon import pid_path
    from gatewayd.service.config import load_config

    config = load_config(args.config)
    for line in schedule_lines(config):
        print(line)
    pid = args.pid
    if pid is None:
        path = pid_path(config)
        try:
            pid = int(path.read_text(encoding="ascii").strip())
        except (OSError, ValueError) as exc:
            print(f"gatewayd: no running daemon found ({path}: {exc}); under systemd:"
                  " systemctl reload gatewayd", file=sys.stderr)  # fmt: skip
            return EXIT_REFUSED
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        print(f"gatewayd: cannot signal daemon {pid}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"reload    sent SIGHUP to daemon {pid}; the audit log records what changed")
    return EXIT_OK
