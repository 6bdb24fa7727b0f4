"""A private Mosquitto on a free loopback port, for tests and the demo.

Never depends on a system broker: every instance writes its own config into a temporary
directory and listens on a port found by binding port 0. ``python -m gatewayd.simulators.broker``
runs one in the foreground and prints its URL.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType

from gatewayd.kernel.errors import ErrorCode, GatewayError

#: How much of the broker's log goes into an error message.
_LOG_TAIL_LINES = 20
#: Brokers still running, stopped at interpreter exit so none outlives a crashed test run.
_LIVE: weakref.WeakSet[Mosquitto] = weakref.WeakSet()


class BrokerError(GatewayError):
    """The development broker could not be started."""

    code: str = ErrorCode.BROKER_ERROR


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Mosquitto:
    """One ``mosquitto -c FILE`` subprocess; ``with``/``async with``, or ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        binary: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout_s: float = 5.0,
        stop_timeout_s: float = 3.0,
        extra_config: str = "",
    ) -> None:
        self.host = host
        #: Appended to the generated configuration (a bridge, an ACL file, ...).
        self.extra_config = extra_config
        #: Chosen at the first start and kept across restarts.
        self.port = port or 0
        self._binary = binary
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        #: Number of times the broker process was started.
        self.starts = 0

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise BrokerError("broker was never started")
        return self._dir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- sync API (CLI, demo, fixtures) -------------------------------------------------------

    def start(self) -> None:
        """Start the broker and wait until its port accepts connections.

        On failure the temporary directory is removed; the error carries the log's tail.
        """
        if self.running:
            return
        try:
            self._launch()
        except BrokerError:
            self.stop()
            raise

    def _launch(self) -> None:
        binary = self._binary or shutil.which("mosquitto") or _sbin("mosquitto")
        if binary is None:
            raise BrokerError("mosquitto not found; install it: apt-get install mosquitto")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="gatewayd-mosquitto-"))
        if not self.port:
            self.port = free_port(self.host)
        conf = self._dir / "mosquitto.conf"
        conf.write_text(self._config(), encoding="utf-8")
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        stderr = (self._dir / "stderr.log").open("ab")
        try:
            self._proc = subprocess.Popen(
                [binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise BrokerError(
                f"mosquitto not found at {binary}; install it: apt-get install mosquitto"
            ) from exc
        except OSError as exc:
            raise BrokerError(f"cannot run {binary}: {exc}") from exc
        finally:
            stderr.close()
        self.starts += 1
        _LIVE.add(self)
        self._wait_ready(log_offset)

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after a deadline); idempotent."""
        self._end(signal.SIGTERM)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; ``start()`` or ``restart()`` brings it back."""
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP the broker: connections stay open but nothing is answered (a hung broker)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self, *, down_s: float = 0.0, hard: bool = False) -> None:
        """Stop (or kill) the broker, stay down ``down_s``, start it again on the same port."""
        self._end(signal.SIGKILL if hard else signal.SIGTERM)
        if down_s > 0:
            time.sleep(down_s)
        self.start()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the broker's log and of its stderr."""
        if self._dir is None:
            return ""
        out: list[str] = []
        for name in ("mosquitto.log", "stderr.log"):
            with contextlib.suppress(OSError):
                text = (self._dir / name).read_text(encoding="utf-8", errors="replace")
                out.extend(text.splitlines()[-lines:])
        return "\n".join(out)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- async API: the same operations, off the event loop -----------------------------------

    async def __aenter__(self) -> Mosquitto:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    async def restart_async(self, *, down_s: float = 0.0, hard: bool = False) -> None:
        await asyncio.to_thread(self._end, signal.SIGKILL if hard else signal.SIGTERM)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.start)

    async def kill_async(self) -> None:
        await asyncio.to_thread(self.kill)

    async def start_async(self) -> None:
        await asyncio.to_thread(self.start)

    # --- internals ----------------------------------------------------------------------------

    def _config(self) -> str:
        assert self._dir is not None
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            f"log_dest file {self._dir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
            # A test's collector may lag a burst: queue for it rather than drop (default 1000).
            "max_queued_messages 100000",
            # Latency matters more than packet count on loopback.
            "set_tcp_nodelay true",
        ]
        # Started as root, mosquitto drops to user "mosquitto", who cannot write our temp dir.
        if os.geteuid() == 0:
            lines.append("user root")
        return "\n".join(lines) + "\n" + self.extra_config

    def _wait_ready(self, log_offset: int) -> None:
        """Wait for our process to log that it runs *and* for the port to accept a connection.

        The log line matters: a connection alone may reach another broker that already holds
        the port (ours then exits with "Address already in use").
        """
        assert self._proc is not None
        deadline = time.monotonic() + self._start_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise BrokerError(
                    f"mosquitto exited with status {code} on port {self.port}; its log:\n"
                    f"{self.log_tail()}"
                )
            if self._logged_running(log_offset):
                try:
                    with socket.create_connection((self.host, self.port), timeout=0.2):
                        return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self._end(signal.SIGKILL)
                raise BrokerError(
                    f"mosquitto did not accept connections on {self.host}:{self.port} within"
                    f" {self._start_timeout_s} s; its log:\n{self.log_tail()}"
                )
            time.sleep(0.005)

    def _logged_running(self, log_offset: int) -> bool:
        try:
            with self.log_path.open("rb") as log:
                log.seek(log_offset)
                return b" running" in log.read()
        except OSError:
            return False

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # A paused broker cannot act on SIGTERM until it runs again.
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(sig)
        try:
            proc.wait(timeout=self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=self._stop_timeout_s)


@atexit.register
def _stop_all() -> None:
    for broker in list(_LIVE):
        broker.stop()


def _sbin(name: str) -> str | None:
    # Debian installs the broker in /usr/sbin, which is not on every user's PATH.
    path = Path("/usr/sbin") / name
    return str(path) if path.exists() else None


def main() -> None:
    """Run a private broker in the foreground until interrupted."""
    broker = Mosquitto()
    try:
        broker.start()
    except BrokerError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from exc
    print(broker.url, flush=True)
    try:
        while broker.running:
            time.sleep(0.5)
        print(f"mosquitto exited; log:\n{broker.log_tail()}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
