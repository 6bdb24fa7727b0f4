"""Serial line addresses as pyserial's ``serial_for_url`` takes them, checked at config load.

A device path (``/dev/ttyUSB0``, a pty) or a URL whose scheme is one a driver allows; a network
scheme must name a host and a port. Drivers on serial lines (the PSAP radio, OSDP readers)
validate their ``url`` with :func:`check_serial_url` so each names mistakes the same way.
"""

from __future__ import annotations

from collections.abc import Set
from urllib.parse import urlsplit

#: Schemes that must name a host and a port.
NETWORK_SCHEMES = frozenset({"socket", "rfc2217"})


def check_serial_url(url: str, schemes: Set[str]) -> str:
    """``url`` if it is a device path or a URL of one of ``schemes``; ValueError naming why."""
    if "://" not in url:
        if any(c.isspace() for c in url):
            raise ValueError(f"device path {url!r} contains white space")
        return url
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        known = ", ".join(f"{s}://" for s in sorted(schemes))
        raise ValueError(f"URL scheme {parts.scheme!r} is not one of {known}")
    if parts.scheme in NETWORK_SCHEMES:
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ValueError(f"{url!r} needs a host and a port, e.g. socket://10.0.0.5:4001")
    return url
