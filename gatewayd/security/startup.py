"""What the daemon refuses to start with outside demo mode: shipped keys, weak broker access."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pydantic import SecretStr

from gatewayd.kernel.driver import DriverConfig
from gatewayd.security.actors import SecurityConfig
from gatewayd.security.credentials import AccessConfig
from gatewayd.security.keys import is_demo_key

#: Passwords that ship in examples and tutorials; refused outside demo mode.
DEFAULT_PASSWORDS = frozenset(
    {
        "password",
        "changeme",
        "change-me",
        "admin",
        "secret",
        "mosquitto",
        "gatewayd",
        "demo",
        "public",
        "guest",
        "test",
    }
)
#: Exit status of a daemon that refuses its configuration (sysexits.h EX_CONFIG).
EX_CONFIG = 78


def refuse_unsafe(
    site_demo: bool,
    security: SecurityConfig,
    mqtt_url: str,
    mqtt_password: str | None,
    tls_verify: bool,
) -> list[str]:
    """Reasons the daemon must not start outside demo mode; empty means it may."""
    if site_demo:
        return []
    problems = []
    demo = sorted(a.id for a in security.actors if is_demo_key(a.public_key))
    if demo:
        problems.append(f"actors use the shipped DEMO keys: {', '.join(demo)}")
    scheme, host = _scheme_host(mqtt_url)
    if mqtt_password is not None and not mqtt_password.strip():
        problems.append("mqtt.password is empty")
    elif mqtt_password is not None and mqtt_password.lower() in DEFAULT_PASSWORDS:
        problems.append("mqtt.password is a well-known default")
    if scheme == "mqtt" and not _is_loopback(host):
        problems.append(f"plain mqtt:// to {host}, which is not this machine: use mqtts://")
    if scheme == "mqtt" and mqtt_password is None:
        problems.append(
            "no broker credentials: set mqtt.password or use mqtts:// with a client certificate"
        )
    if not tls_verify:
        problems.append("mqtt.tls.verify is off: the broker could be anyone")
    return problems


#: The reader keys (SCBK) of configs/demo-campus.toml: public, refused outside demo mode.
DEMO_READER_KEYS = frozenset(f"d3a0c1e2b4f60718293a4b5c6d7e8f9{n}" for n in range(10))


def refuse_demo_access(
    site_demo: bool, access: AccessConfig | None, devices: Iterable[DriverConfig]
) -> list[str]:
    """The shipped demo site key and demo reader keys, refused outside demo mode."""
    if site_demo:
        return []
    problems = []
    if access is not None and access.is_demo:
        problems.append("access.site_key is the shipped DEMO key: anyone can make its cards")
    demo = sorted(
        d.id
        for d in devices
        if isinstance(key := getattr(d, "scbk", None), SecretStr)
        and key.get_secret_value().lower() in DEMO_READER_KEYS
    )
    if demo:
        problems.append(f"readers use the shipped DEMO secure channel keys: {', '.join(demo)}")
    return problems


def _scheme_host(url: str) -> tuple[str, str]:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return scheme.lower(), host


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
