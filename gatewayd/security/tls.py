"""TLS to the MQTT broker: server verification always, a client certificate for mTLS."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from gatewayd.kernel.errors import ErrorCode, GatewayError


class TlsError(GatewayError):
    """A TLS file is missing or unusable."""

    code: str = ErrorCode.BAD_TLS


class TlsConfig(BaseModel):
    """``[mqtt.tls]``: used with an ``mqtts://`` broker URL. Paths are relative to the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: CA bundle that signed the broker's certificate; the system store when unset.
    ca_file: str | None = None
    #: This gateway's client certificate (mTLS) and its key (may be in the same PEM file).
    cert_file: str | None = None
    key_file: str | None = None
    #: Verify the broker's certificate and name. Off is refused outside demo mode.
    verify: bool = True
    #: Name to expect in the broker's certificate when the URL host differs (an IP, a tunnel).
    server_hostname: str | None = None

    @model_validator(mode="after")
    def _pairs(self) -> TlsConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class _NamedContext(ssl.SSLContext):
    """A client context that checks the certificate against a fixed name, not the URL host."""

    expected_hostname: str | None = None

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        # paho passes the URL host; a configured name overrides it for SNI and verification.
        if self.expected_hostname is not None:
            kwargs["server_hostname"] = self.expected_hostname
        return super().wrap_socket(sock, *args, **kwargs)


def ssl_context(cfg: TlsConfig, *, relative_to: Path | None = None) -> ssl.SSLContext:
    """A client context: TLS 1.2 or newer, broker verified, client certificate if configured."""
    ctx = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.expected_hostname = cfg.server_hostname

    def path(name: str) -> str:
        return str(relative_to / name) if relative_to is not None else name

    try:
        if cfg.ca_file is not None:
            ctx.load_verify_locations(cafile=path(cfg.ca_file))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if cfg.cert_file is not None:
            key = path(cfg.key_file) if cfg.key_file is not None else None
            ctx.load_cert_chain(path(cfg.cert_file), key)
    except FileNotFoundError as exc:
        raise TlsError(f"TLS file not found: {exc.filename}") from exc
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(f"cannot load TLS files: {exc}") from exc
    if not cfg.verify:
        # Order matters: check_hostname must be off before CERT_NONE is allowed.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
