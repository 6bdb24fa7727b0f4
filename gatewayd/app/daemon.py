"""Process entry for ``gatewayd run``: signals, systemd notification, bounded shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gatewayd.app.sdnotify import Notifier
from gatewayd.security.startup import EX_CONFIG, refuse_demo_access, refuse_unsafe
from gatewayd.security.tls import TlsError, ssl_context
from gatewayd.service.config import Config
from gatewayd.service.gateway import Gateway

log = structlog.get_logger(__name__)

#: Shutdown must finish within this; systemd's TimeoutStopSec is larger.
STOP_DEADLINE_S = 5.0


#: Exit status after a fatal error (the unit restarts the daemon).
EX_FATAL = 1
#: The daemon's process id, in the state dir, while it runs.
PID_FILE = "gatewayd.pid"


def run_daemon(config: Config) -> int:
    """Run until SIGTERM or SIGINT; return the process exit code.

    A fatal error exits non-zero within a bounded time: if tearing down hangs (a thread stuck
    on a dead disk), a timer ends the process anyway, so systemd can start a fresh one.
    """
    try:
        return asyncio.run(serve(config))
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        _exit_after(STOP_DEADLINE_S, EX_FATAL)
        with contextlib.suppress(Exception):
            log.critical("daemon.fatal", error=f"{type(exc).__name__}: {exc}")
        return EX_FATAL


def _exit_after(delay_s: float, code: int) -> None:
    """End the process in ``delay_s`` whatever is still running (a last resort)."""
    timer = threading.Timer(delay_s, os._exit, (code,))
    timer.daemon = True
    timer.start()


async def serve(config: Config, on_ready: Callable[[Gateway], None] | None = None) -> int:
    """Run a gateway until SIGTERM or SIGINT, telling systemd (if present) how it goes.

    Returns :data:`EX_CONFIG` (78) without starting anything if the config is unsafe
    outside demo mode (demo keys, weak broker credentials, no TLS verification).
    """
    problems = start_problems(config)
    if problems:
        for problem in problems:
            print(f"gatewayd: refusing to start: {problem}", file=sys.stderr)
        log.critical("daemon.refused", problems=problems)
        return EX_CONFIG
    notifier = Notifier()
    gateway = Gateway(config)
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stopping = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stopping.is_set():
            return
        # The flag first: a log line that fails (a broken pipe) must not swallow the stop.
        stopping.set()
        _exit_after(STOP_DEADLINE_S * 2, 0)
        notifier.stopping()
        log.info("daemon.stopping", signal=signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    reloads: set[asyncio.Task[Any]] = set()

    def on_reload() -> None:
        # systemd's ExecReload and `gatewayd reload` send SIGHUP: schedules change live.
        log.info("daemon.reload", signal="SIGHUP")
        task = loop.create_task(gateway.reload(actor="system:sighup"), name="reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_reload)
    pid_file = write_pid_file(config)

    def ready() -> None:
        doors = len(gateway.campus.doors)
        notifier.ready(f"ready: {doors} doors, {len(gateway.drivers)} devices")
        if on_ready is not None:
            on_ready(gateway)

    try:
        async with asyncio.TaskGroup() as group:
            run = group.create_task(gateway.run(ready), name="gateway")
            group.create_task(notifier.feed_watchdog(), name="watchdog")
            await stopping.wait()
            run.cancel()
            async with asyncio.timeout(STOP_DEADLINE_S):
                await asyncio.gather(run, return_exceptions=True)
            raise _Stop
    except* _Stop:
        pass
    finally:
        notifier.close()
        with contextlib.suppress(OSError):
            pid_file.unlink()
    log.info("daemon.stopped")
    return 0


def pid_path(config: Config) -> Path:
    """Where the running daemon writes its process id (``gatewayd reload`` reads it)."""
    return Path(config.state_dir) / PID_FILE


def write_pid_file(config: Config) -> Path:
    path = pid_path(config)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(f"{os.getpid()}\n", encoding="ascii")
    return path


def start_problems(config: Config) -> list[str]:
    """Why this config must not run: unsafe settings, or TLS files that do not load."""
    problems = refuse_unsafe(
        config.site.demo,
        config.security,
        config.mqtt.url,
        config.mqtt.password,
        config.mqtt.tls.verify,
    )
    problems += refuse_demo_access(config.site.demo, config.access, config.devices)
    if config.mqtt.tls_enabled:
        try:
            ssl_context(config.mqtt.tls)
        except TlsError as exc:
            problems.append(f"mqtt.tls: {exc}")
    return problems


class _Stop(Exception):
    """Ends the daemon's task group after a requested shutdown."""
