"""``gatewayd bridge-config``: the school's own Mosquitto bridged to the district brokers.

On the box, gatewayd talks MQTT 5 to its own Mosquitto; the bridge is the district uplink:
one bridge per district broker, MQTT 3.1.1 (what NATS and RabbitMQ speak), a persistent
session, only ``cmd`` inbound and an allow-list outbound (docs/district.md).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from gatewayd.kernel.errors import ConfigError

#: What the district sees of a school, always: replies, state, availability, heartbeat, events.
OUTBOUND = ("availability", "heartbeat", "state/#", "event/#", "cmd/result", "cmd/reply/#")
_BROKER = re.compile(r"^mqtt://(?P<host>[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(:(?P<port>\d{1,5}))?/?$")


def addresses(url: str) -> list[str]:
    """``mqtt://h1:1883|h2:1883`` (the nodes of one district broker) -> ``["h1:1883", ...]``."""
    found = []
    for n, given in enumerate(url.split("|")):
        # The scheme is said once: mqtt://n1:4883|n2:4883|n3:4883.
        node = f"mqtt://{given.strip()}" if n and "://" not in given else given.strip()
        match = _BROKER.match(node)
        if match is None:
            hint = " (TLS bridges are not generated yet)" if node.startswith("mqtts:") else ""
            raise ConfigError("--district", [f"not an mqtt://host[:port] URL: {node!r}{hint}"])
        found.append(f"{match['host']}:{match['port'] or 1883}")
    return found


def bridge_config(prefix: str, site: str, districts: Sequence[str], *, doors: bool = False) -> str:
    """Mosquitto configuration text: one ``connection`` per district broker."""
    if not districts:
        raise ConfigError("--district", ["give at least one district broker URL"])
    base = f"{prefix}/{site}"
    outbound = OUTBOUND + (("door/#",) if doors else ())
    lines = [
        f"# District uplink of {site}: written by `gatewayd bridge-config`; re-run it to change.",
        "# Include it from the school's mosquitto.conf (Debian: /etc/mosquitto/conf.d/).",
    ]
    for n, url in enumerate(districts, start=1):
        name = f"gatewayd-{site}-district-{n}"
        lines += [
            "",
            f"# District broker {n}: {url}",
            f"connection {name}",
            f"address {' '.join(addresses(url))}",
            "bridge_protocol_version mqttv311",
            # NATS and RabbitMQ refuse the bridge flag in the protocol level byte.
            "try_private false",
            # Persistent: a command sent while the link is down waits at the district broker.
            "cleansession false",
            f"remote_clientid {name}",
            f"local_clientid {name}-local",
            "keepalive_interval 15",
            "restart_timeout 1 10",
            "notifications false",
            "start_type automatic",
            # Only commands come in; replies, state and events go out.
            f"topic {base}/cmd in 1",
            *(f"topic {base}/{topic} out 1" for topic in outbound),
        ]
    return "\n".join(lines) + "\n"


def add_bridge_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bridge-config",
        help="write the school Mosquitto's bridge to the district broker(s)",
        description=__doc__,
    )
    p.add_argument("-c", "--config", required=True, help="campus config file")
    p.add_argument(
        "--district",
        required=True,
        metavar="URL[,URL]",
        help="district brokers, comma-separated; one broker's cluster nodes joined with |",
    )
    p.add_argument("--doors", action="store_true", help="also send every door topic")
    p.add_argument("--out", default=None, metavar="FILE", help="write here (default: stdout)")
    p.set_defaults(handler=_bridge_config)


def _bridge_config(args: argparse.Namespace) -> int:
    # Here, not at the top: `gatewayd --help` and the operator commands build this parser too,
    # and must not load the campus model (every driver's config) to do it.
    from gatewayd.service.config import load_config

    config = load_config(args.config)
    districts = [u.strip() for u in args.district.split(",") if u.strip()]
    text = bridge_config(config.mqtt.prefix, config.site.id, districts, doors=args.doors)
    if args.out is None:
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}: {len(districts)} bridge(s) for {config.site.id}")
    return 0
