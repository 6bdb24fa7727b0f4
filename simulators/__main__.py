"""Run simulators from the command line.

``python -m gatewayd.simulators board --port 15020 --doors 32`` runs one relay board;
``python -m gatewayd.simulators campus -c configs/demo-campus.toml`` runs every device of a campus
(``--control 127.0.0.1:0`` adds the control interface, docs/simulators.md);
``python -m gatewayd.simulators radio --tcp-port 0`` (or ``--pty``) runs a PSAP radio interface;
``python -m gatewayd.simulators camera --port 0`` runs an ONVIF camera (its device service url
in ``urls``);
``python -m gatewayd.simulators reader --scbk HEX --tcp-port 0`` (or ``--pty``) runs an OSDP
card reader (libosdp peripheral device; ``--install-mode`` for a reader not paired yet).
When everything listens, one JSON line ``{"ready": true, "ports": {...}}`` goes to stdout
(the only thing ever written there); logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
from collections.abc import Mapping, Sequence

import structlog

from gatewayd.kernel.errors import ConfigError
from gatewayd.kernel.site import Site, load_site
from gatewayd.simulators.campus import CampusSim, Simulated
from gatewayd.simulators.control import ControlServer, host_port
from gatewayd.simulators.psap_radio import PsapRadioSim
from gatewayd.simulators.relay_board import RelayBoardSim

log = structlog.get_logger("simulators")


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one subcommand after another
    parser = argparse.ArgumentParser(
        prog="python -m gatewayd.simulators", description="Run simulators."
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--json-logs", action="store_true", help="one JSON object per log line")
    sub = parser.add_subparsers(dest="command", required=True)
    board = sub.add_parser("board", help="one Modbus TCP lock relay board")
    board.add_argument("--host", default="127.0.0.1")
    board.add_argument("--port", type=int, default=15020, help="0 picks a free port")
    board.add_argument("--doors", type=int, default=32, help="coils (one lock per door)")
    board.add_argument("--extra-inputs", type=int, default=4, help="spare alarm inputs")
    board.add_argument("--id", default="board", help="key of the port in the ready line")
    campus = sub.add_parser("campus", help="every simulated device of a campus config")
    campus.add_argument("-c", "--config", required=True, help="campus TOML file")
    campus.add_argument("--free-ports", action="store_true", help="ignore configured ports")
    campus.add_argument("--host", default=None, help="bind here instead of each device's host")
    campus.add_argument(
        "--control",
        type=host_port,
        default=None,
        metavar="HOST:PORT",
        help="serve the control interface here (port 0: a free one, in the ready line)",
    )
    radio = sub.add_parser("radio", help="a PSAP-linked radio interface (serial line protocol)")
    where = radio.add_mutually_exclusive_group()
    where.add_argument("--tcp-port", type=int, default=0, help="listen here (0: a free port)")
    where.add_argument("--pty", action="store_true", help="a pty pair instead of TCP")
    radio.add_argument("--host", default="127.0.0.1")
    radio.add_argument("--id", default="radio", help="key of the port and url in the ready line")
    camera = sub.add_parser("camera", help="an ONVIF camera (device, media, events, PTZ)")
    camera.add_argument("--host", default="127.0.0.1")
    camera.add_argument("--port", type=int, default=0, help="0 picks a free port")
    camera.add_argument("--username", default="admin")
    camera.add_argument("--password", default="secret")
    camera.add_argument("--no-ptz", action="store_true", help="a fixed camera")
    camera.add_argument("--id", default="camera", help="key of the port and url in the ready line")
    reader = sub.add_parser("reader", help="an OSDP card reader (libosdp peripheral device)")
    where = reader.add_mutually_exclusive_group()
    where.add_argument("--tcp-port", type=int, default=0, help="listen here (0: a free port)")
    where.add_argument("--pty", action="store_true", help="a pty pair instead of TCP")
    reader.add_argument("--host", default="127.0.0.1")
    reader.add_argument("--address", type=int, default=0, help="OSDP address 0..126")
    reader.add_argument("--scbk", type=scbk, default=None, help="secure channel key, 32 hex digits")
    reader.add_argument("--install-mode", action="store_true", help="accept the default key")
    reader.add_argument("--door", default="", help="door it is mounted at (control interface)")
    reader.add_argument("--id", default="reader", help="key of the port and url in the ready line")
    bacnet = sub.add_parser("bacnet", help="a BACnet/IP door controller (bacpypes3)")
    bacnet.add_argument("--host", default="127.0.0.1")
    bacnet.add_argument("--port", type=int, default=47809, help="0 picks a free port")
    bacnet.add_argument("--doors", type=int, default=16, help="binary outputs (one per lock)")
    bacnet.add_argument("--device-instance", type=int, default=1001)
    bacnet.add_argument("--actuation-ms", type=float, default=5.0, help="output -> lock sense")
    bacnet.add_argument("--id", default="bacnet", help="key of the port in the ready line")
    bacnet.add_argument(
        "--no-rpm", action="store_true", help="no ReadPropertyMultiple (rejected, not listed)"
    )
    bacnet.add_argument("--no-cov", action="store_true", help="no SubscribeCOV (rejected)")
    bacnet.add_argument(
        "--max-apdu",
        type=int,
        default=1476,
        metavar="N",
        help="max-apdu-length-accepted (50..1476)",
    )
    bacnet.add_argument(
        "--no-segmentation",
        action="store_true",
        help="cannot segment: a reply over --max-apdu is aborted",
    )
    bacnet.add_argument(
        "--air-units",
        type=int,
        default=0,
        metavar="N",
        help="air handlers (fan + outside-air damper each) from instance 1000",
    )
    # Coil write logs are a relay-board matter.
    for p in (radio, camera, bacnet, reader):
        p.set_defaults(write_log=None)
    for p in (board, radio, camera, bacnet, reader):
        p.add_argument(
            "--control",
            type=host_port,
            default=None,
            metavar="HOST:PORT",
            help="serve the control interface here (coils, inputs by point, camera events)",
        )
    for p in (board, campus):
        p.add_argument("--actuation-ms", type=float, default=5.0, help="coil -> lock sense delay")
        p.add_argument(
            "--write-log",
            default=None,
            metavar="FILE",
            help="on exit, write every coil write as JSON lines (for crash tests)",
        )
    return parser


def scbk(text: str) -> bytes:
    """A 16-byte key written as 32 hex digits, for argparse's ``type=``."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise argparse.ArgumentTypeError(f"expected 32 hex digits, got {text!r}")
    return key


def configure_logging(level: str, *, json_logs: bool) -> None:
    """structlog to stderr, so stdout carries nothing but the ready line."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


def build(args: argparse.Namespace) -> tuple[dict[str, Simulated], CampusSim[Site] | None]:
    """The simulators a command asks for, by id (a campus's, for ``campus``)."""
    if args.command == "campus":
        campus = CampusSim(
            load_site(args.config),
            free_ports=args.free_ports,
            host=args.host,
            actuation_ms=args.actuation_ms,
        )
        return campus.devices, campus
    sim: Simulated
    if args.command == "board":
        sim = RelayBoardSim(
            args.doors,
            extra_inputs=args.extra_inputs,
            host=args.host,
            port=args.port,
            actuation_ms=args.actuation_ms,
            name=args.id,
        )
    elif args.command == "radio":
        sim = PsapRadioSim(
            "pty" if args.pty else "tcp", host=args.host, port=args.tcp_port, name=args.id
        )
    elif args.command == "reader":
        from gatewayd.simulators.osdp_reader import OsdpReaderSim

        sim = OsdpReaderSim(
            "pty" if args.pty else "tcp",
            scbk=args.scbk,
            address=args.address,
            install_mode=args.install_mode,
            door=args.door,
            host=args.host,
            port=args.tcp_port,
            name=args.id,
        )
    elif args.command == "camera":
        # Imported here: OpenCV and aiohttp load only when a camera is asked for.
        from gatewayd.simulators.onvif_camera import OnvifCameraSim

        sim = OnvifCameraSim(
            args.id,
            username=args.username,
            password=args.password,
            host=args.host,
            port=args.port,
            ptz=not args.no_ptz,
        )
    else:
        from gatewayd.simulators.bacnet_device import BacnetDeviceSim

        sim = BacnetDeviceSim(
            args.doors,
            host=args.host,
            port=args.port,
            device_instance=args.device_instance,
            actuation_ms=args.actuation_ms,
            name=args.id,
            rpm=not args.no_rpm,
            cov=not args.no_cov,
            max_apdu=args.max_apdu,
            segmentation=not args.no_segmentation,
            air_units=args.air_units,
        )
    return {args.id: sim}, None


def url_of(sim: Simulated) -> str | None:
    """Where a client connects, for the devices whose port alone does not say it."""
    if isinstance(sim, PsapRadioSim):
        return sim.url
    # A reader's url (pty path or socket://), a camera's device service url.
    for attr in ("url", "device_url"):
        value = getattr(sim, attr, None)
        if isinstance(value, str):
            return value
    return None


async def serve(args: argparse.Namespace) -> None:
    """Start the simulators, announce readiness, run until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sims, campus = build(args)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if campus is not None:
                await stack.enter_async_context(campus)
            else:
                for sim in sims.values():
                    await stack.enter_async_context(sim)
            # A pty radio has no port; its url says where it is.
            ports = {ident: sim.port for ident, sim in sims.items() if sim.port}
            urls = {} if campus else {i: u for i, s in sims.items() if (u := url_of(s))}
            if args.control is not None:
                host, port = args.control
                control = (
                    ControlServer(campus, host=host, port=port)
                    if campus is not None
                    else ControlServer(devices=sims, host=host, port=port)
                )
                await stack.enter_async_context(control)
                ports["control"] = control.port
            # What start-up built lives as long as the simulators: out of the collector's
            # full passes, which would otherwise pause every simulated device for ~12 ms.
            gc.freeze()
            print(
                json.dumps({"ready": True, "ports": ports, **({"urls": urls} if urls else {})}),
                flush=True,
            )
            await stop.wait()
            log.info("stopping", reason="signal")
    finally:
        if args.write_log:
            dump_write_log(
                args.write_log, {i: s for i, s in sims.items() if isinstance(s, RelayBoardSim)}
            )


def dump_write_log(path: str, boards: Mapping[str, RelayBoardSim]) -> None:
    """Every coil write each board received, one JSON object a line, in board order."""
    with open(path, "w", encoding="utf-8") as out:
        for name, board in boards.items():
            for write in board.write_log:
                out.write(
                    json.dumps(
                        {
                            "device": name,
                            "ns": write.ns,
                            "coil": write.address,
                            "value": write.value,
                        }
                    )
                    + "\n"
                )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, json_logs=args.json_logs)
    try:
        asyncio.run(serve(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:
        log.error("cannot_listen", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
