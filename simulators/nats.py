"""Debian's nats-server with JetStream and MQTT (3.1.1), on free loopback ports, for tests.

One :class:`NatsServer` is one node; :func:`nats_cluster` starts N nodes routed together
(JetStream replicates the MQTT streams across them). MQTT on NATS needs JetStream, so every
node has a ``server_name`` and a store directory of its own.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from gatewayd.simulators.broker import BrokerError, free_port

_LOG_TAIL_LINES = 20


def nats_binary() -> str | None:
    found = shutil.which("nats-server")
    if found:
        return found
    return "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None


class NatsServer:
    """One ``nats-server -c FILE`` subprocess; ``with``, or ``start()``/``stop()``."""

    def __init__(
        self,
        name: str = "n1",
        *,
        host: str = "127.0.0.1",
        cluster_port: int | None = None,
        routes: tuple[int, ...] = (),
        start_timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.host = host
        self.mqtt_port = free_port(host)
        self.client_port = free_port(host)
        #: The monitoring endpoint (``/jsz``: who leads which stream).
        self.http_port = free_port(host)
        #: Set for a cluster node: where the other nodes route to this one.
        self.cluster_port = cluster_port
        self.routes = routes
        self._start_timeout_s = start_timeout_s
        self._dir = Path(tempfile.mkdtemp(prefix=f"gatewayd-nats-{name}-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The MQTT listener, as a campus file's ``[mqtt] url``."""
        return f"mqtt://{self.host}:{self.mqtt_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self._dir / "nats.log"

    def config_text(self) -> str:
        lines = [
            f"server_name: {self.name}",
            f"listen: {self.host}:{self.client_port}",
            f"http: {self.host}:{self.http_port}",
            f'jetstream {{ store_dir: "{self._dir / "js"}" }}',
            f"mqtt {{ listen: {self.host}:{self.mqtt_port} }}",
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f'"nats-route://{self.host}:{p}"' for p in self.routes)
            lines.append(
                f"cluster {{ name: district, listen: {self.host}:{self.cluster_port},"
                f" routes: [{routes}] }}"
            )
        return "\n".join(lines) + "\n"

    def start(self, *, wait: bool = True) -> None:
        """Start the node; with ``wait``, until its MQTT port accepts connections."""
        if self.running:
            return
        binary = nats_binary()
        if binary is None:
            raise BrokerError("nats-server not found; install it: apt-get install nats-server")
        conf = self._dir / "nats.conf"
        conf.write_text(self.config_text(), encoding="utf-8")
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise BrokerError(f"nats-server {self.name} exited; its log:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.mqtt_port), timeout=0.2),
            ):
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"nats-server {self.name} did not listen for MQTT on {self.mqtt_port} within"
                    f" {self._start_timeout_s} s; its log:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def stream_leaders(self) -> dict[str, str]:
        """Stream name -> the ``server_name`` of the node leading it (clustered JetStream)."""
        url = f"http://{self.host}:{self.http_port}/jsz?accounts=true&streams=true"
        with urllib.request.urlopen(url, timeout=2) as response:
            report = json.load(response)
        leaders: dict[str, str] = {}
        for account in report.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                leader = (stream.get("cluster") or {}).get("leader")
                if leader:
                    leaders[str(stream["name"])] = str(leader)
        return leaders

    def kill(self) -> None:
        """SIGKILL the node, as a crash would."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)
        shutil.rmtree(self._dir, ignore_errors=True)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def nats_cluster(size: int = 3, host: str = "127.0.0.1") -> list[NatsServer]:
    """``size`` nodes routed to each other (not started: start them together)."""
    ports = [free_port(host) for _ in range(size)]
    return [
        NatsServer(
            f"n{i + 1}", host=host, cluster_port=port, routes=tuple(p for p in ports if p != port)
        )
        for i, port in enumerate(ports)
    ]
