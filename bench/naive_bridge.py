"""The baseline for single-door paths: a naive paho + pymodbus bridge, nothing else.

It subscribes to ``naive/cmd``, writes the one coil each command names with a blocking
pymodbus client from paho's network thread, and publishes ``{"id", "ok"}`` to the command's
MQTT 5 response topic. No signature, no authority, no journal, no read-back: the floor a
bridge can reach on this machine, which is what the gateway's single-door figures are held to.

    python -m bench.naive_bridge --mqtt mqtt://127.0.0.1:1883 --board b1=127.0.0.1:5020

A command is ``{"id": "...", "board": "b1", "coil": 3, "value": true}``. With ``--poll-ms N``
and ``--inputs K`` it also reads inputs 0..K-1 of every board every N ms (one FC2 each, one
thread) and publishes each change to ``naive/input/<board>/<address>`` as ``true``/``false``.
It prints ``ready`` on stdout once subscribed; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pymodbus.client import ModbusTcpClient

TOPIC = "naive/cmd"


def parse_board(raw: str) -> tuple[str, str, int]:
    name, _, address = raw.partition("=")
    host, _, port = address.rpartition(":")
    return name, host, int(port)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.naive_bridge")
    p.add_argument("--mqtt", required=True, help="mqtt://host:port")
    p.add_argument("--board", action="append", default=[], help="NAME=HOST:PORT (repeat)")
    p.add_argument("--poll-ms", type=int, default=0, help="poll inputs every N ms (0: never)")
    p.add_argument("--inputs", type=int, default=0, help="inputs 0..K-1 polled per board")
    args = p.parse_args()
    boards = {}
    for raw in args.board:
        name, host, port = parse_board(raw)
        boards[name] = ModbusTcpClient(host, port=port)
        if not boards[name].connect():  # type: ignore[no-untyped-call]
            sys.exit(f"naive bridge: cannot connect to board {name} at {host}:{port}")
    url = urlsplit(args.mqtt)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    # The sync client is not thread-safe: paho's thread writes, the poller reads.
    locks = {name: threading.Lock() for name in boards}

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        c.subscribe(TOPIC, qos=1)

    def on_subscribe(*_: Any) -> None:
        subscribed.set()

    def on_message(c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        cmd = json.loads(message.payload)
        with locks[cmd["board"]]:
            reply = boards[cmd["board"]].write_coil(cmd["coil"], bool(cmd["value"]), device_id=1)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        correlation = getattr(message.properties, "CorrelationData", None)
        if correlation is not None:
            props.CorrelationData = correlation
        body = json.dumps({"id": cmd["id"], "ok": not reply.isError()})
        topic = getattr(message.properties, "ResponseTopic", None) or "naive/reply"
        c.publish(topic, body, qos=1, properties=props)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    client.loop_start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not subscribed.wait(10):
        sys.exit(f"naive bridge: no subscription at {args.mqtt} within 10 s")
    if args.poll_ms > 0 and args.inputs > 0:
        poller = threading.Thread(
            target=poll, args=(client, boards, locks, args, stop), daemon=True, name="poll"
        )
        poller.start()
    print("ready", flush=True)
    stop.wait()
    client.loop_stop()
    client.disconnect()
    for board in boards.values():
        board.close()  # type: ignore[no-untyped-call]


def poll(
    client: mqtt.Client,
    boards: dict[str, ModbusTcpClient],
    locks: dict[str, threading.Lock],
    args: argparse.Namespace,
    stop: threading.Event,
) -> None:
    """Every board's inputs each ``poll_ms``; a change is published at once."""
    last: dict[str, list[bool]] = {}
    while not stop.is_set():
        started = time.monotonic()
        for name, board in boards.items():
            with locks[name]:
                reply = board.read_discrete_inputs(0, count=args.inputs, device_id=1)
            if reply.isError():
                continue
            bits = list(reply.bits[: args.inputs])
            before = last.get(name)
            last[name] = bits
            if before is None:
                continue
            for address, (old, new) in enumerate(zip(before, bits, strict=True)):
                if old != new:
                    client.publish(f"naive/input/{name}/{address}", json.dumps(new), qos=1)
        stop.wait(max(0.0, args.poll_ms / 1000 - (time.monotonic() - started)))


if __name__ == "__main__":
    main()
