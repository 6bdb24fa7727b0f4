"""The asyncio floor of polling: pymodbus's async client, one task per board, nothing else.

Each board's discrete inputs are read every ``--poll-ms`` by a task of its own, as the
gateway's drivers do, with no MQTT, no change events and no timeouts of our own: what the
event loop and pymodbus's async request path cost by themselves. ``bench.floor`` measures
its CPU beside the naive bridge (pymodbus's sync client, one thread polling every board in
turn) and the gateway.

    python -m bench.async_poller --board NAME=HOST:PORT ... --poll-ms 100 --inputs 96
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from pymodbus.client import AsyncModbusTcpClient

from bench.naive_bridge import parse_board


async def poll(client: AsyncModbusTcpClient, poll_s: float, inputs: int) -> None:
    while True:
        await client.read_discrete_inputs(0, count=inputs, device_id=1)
        await asyncio.sleep(poll_s)


async def main_async(args: argparse.Namespace) -> None:
    clients = []
    for raw in args.board:
        name, host, port = parse_board(raw)
        client = AsyncModbusTcpClient(host, port=port, retries=0)
        if not await client.connect():
            sys.exit(f"async poller: cannot connect to board {name} at {host}:{port}")
        clients.append(client)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(poll(c, args.poll_ms / 1000, args.inputs)) for c in clients]
    print("ready", flush=True)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        client.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.async_poller")
    p.add_argument("--board", action="append", default=[], help="NAME=HOST:PORT (repeat)")
    p.add_argument("--poll-ms", type=int, default=100)
    p.add_argument("--inputs", type=int, default=96, help="inputs 0..K-1 read per board")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
