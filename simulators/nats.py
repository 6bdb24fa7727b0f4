"""Debian's nats-server with JetStream and MQTT (3.1.1), on free loopback ports, for tests.

One :class:`NatsServer` is one node; :func:`nats_cluster` makes N nodes routed together
(JetStream replicates the MQTT streams across them) and :func:`start_cluster` starts them and
waits for the JetStream meta group to hold every node. MQTT on NATS needs JetStream, so every
node has a ``server_name`` and a store directory of its own.

A cluster node says ``mqtt { stream_replicas: N }``: without it, nats-server 2.9 creates the
MQTT streams on the first MQTT connection with as many replicas as there are nodes it sees
*then*, so a client that connects while a node is still joining leaves R2 (or R1) streams,
and killing one of their nodes leaves them without a quorum for good (docs/district.md).
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
from typing import Any

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
        stream_replicas: int | None = None,
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
        #: Replicas of the MQTT streams (``$MQTT_sess``, ``$MQTT_msgs``, ``$MQTT_rmsgs``).
        self.stream_replicas = stream_replicas
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
        ]
        replicas = (
            "" if self.stream_replicas is None else f", stream_replicas: {self.stream_replicas}"
        )
        lines.append(f"mqtt {{ listen: {self.host}:{self.mqtt_port}{replicas} }}")
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

    def jsz(self, query: str = "") -> dict[str, Any]:
        """The node's JetStream report (monitoring endpoint ``/jsz``)."""
        url = f"http://{self.host}:{self.http_port}/jsz{query}"
        with urllib.request.urlopen(url, timeout=2) as response:
            report: dict[str, Any] = json.load(response)
        return report

    def stream_leaders(self) -> dict[str, str]:
        """Stream name -> the ``server_name`` of the node leading it (clustered JetStream).

        A node reports only the streams it holds a replica of: ask every node (``leaders``).
        """
        report = self.jsz("?accounts=true&streams=true")
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
    """``size`` nodes routed to each other, MQTT streams on all of them (not started)."""
    ports = [free_port(host) for _ in range(size)]
    return [
        NatsServer(
            f"n{i + 1}",
            host=host,
            cluster_port=port,
            stream_replicas=size,
            routes=tuple(p for p in ports if p != port),
        )
        for i, port in enumerate(ports)
    ]


def start_cluster(nodes: list[NatsServer], timeout_s: float = 30.0) -> None:
    """Start every node, then wait until the JetStream meta group holds all of them."""
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
    deadline = time.monotonic() + timeout_s
    while meta_leader(nodes, complete=True) is None:
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {n.name}\n{n.log_tail()}" for n in nodes)
            raise BrokerError(f"the NATS cluster did not form within {timeout_s} s:\n{tails}")
        time.sleep(0.1)


def meta_leader(nodes: list[NatsServer], *, complete: bool = False) -> str | None:
    """The JetStream meta leader's name; with ``complete``, only once every peer is current."""
    for node in nodes:
        if not node.running:
            continue
        try:
            meta = node.jsz().get("meta_cluster") or {}
        except OSError:
            continue
        peers = meta.get("replicas") or []
        if meta.get("leader") != node.name:
            continue
        if complete and (len(peers) != len(nodes) - 1 or not all(p.get("current") for p in peers)):
            return None
        return node.name
    return None


def leaders(nodes: list[NatsServer]) -> dict[str, str]:
    """Stream name -> leading node, as the running nodes report it."""
    found: dict[str, str] = {}
    for node in nodes:
        if node.running:
            with contextlib.suppress(OSError, ValueError):
                found.update(node.stream_leaders())
    return found
