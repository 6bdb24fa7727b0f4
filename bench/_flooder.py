"""Publish unauthenticated garbage on a topic at a steady rate, from its own process.

    python -m bench._flooder --host 127.0.0.1 --port 1883 --topic gatewayd/x/cmd --rate 2000

Prints one JSON line when done: how many messages went out and over how long.
"""

from __future__ import annotations

import argparse
import json
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

#: Messages are published in bursts this often, ``rate * TICK_S`` at a time.
TICK_S = 0.01


def flood(args: argparse.Namespace) -> dict[str, float]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(args.host, args.port)
    client.loop_start()
    per_tick = max(1, round(args.rate * TICK_S))
    sent = 0
    start = time.monotonic()
    next_tick = start
    try:
        while time.monotonic() - start < args.seconds:
            for _ in range(per_tick):
                # One-byte garbage, as in the issue; a few shapes so nothing caches it.
                client.publish(args.topic, bytes([sent % 251]) * args.size, qos=0)
                sent += 1
            next_tick += TICK_S
            time.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        elapsed = time.monotonic() - start
        client.disconnect()
        client.loop_stop()
    return {"sent": sent, "elapsed_s": round(elapsed, 3), "rate": round(sent / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._flooder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, default=2000.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=1, help="bytes per message")
    print(json.dumps(flood(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
