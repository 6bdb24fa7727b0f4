"""``[mqtt]`` of the campus file: the broker, the topic prefix, credentials and TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gatewayd.kernel.validation import Model
from gatewayd.security.tls import TlsConfig


class MqttConfig(Model):
    #: Broker URL: ``mqtt://host:port``, or ``mqtts://host:port`` with ``[mqtt.tls]``.
    url: str = Field(default="mqtt://127.0.0.1:1883", pattern=r"^mqtts?://[^/:]+(:\d+)?/?$")
    prefix: str = Field(default="gatewayd", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    #: ``"5"``, or ``"3.1.1"`` for a broker that speaks nothing newer (NATS, RabbitMQ 3.10):
    #: replies then go to ``cmd/result``, matched by the command id (docs/mqtt-api.md).
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = Field(default=15, ge=5, le=600)
    #: How long the broker keeps the gateway's session (its subscription and the QoS 1
    #: commands sent to it) while the gateway is away: a lockdown sent during a restart is
    #: delivered when it is back (and refused as ``expired`` if that took too long).
    session_expiry_s: int = Field(default=600, ge=0, le=86_400)
    #: How often the retained ``heartbeat`` is published: a district sees a school go stale
    #: from its age, even where a bridge keeps the school's ``online`` (docs/district.md).
    heartbeat_s: float = Field(default=5.0, ge=0.5, le=3600)
    #: ``[mqtt.tls]``: CA, client certificate and verification, for ``mqtts://``. File paths
    #: are resolved against the campus file's folder at load.
    tls: TlsConfig = TlsConfig()

    @property
    def tls_enabled(self) -> bool:
        return self.url.startswith("mqtts:")

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rstrip("/").split(":")[0]

    @property
    def port(self) -> int:
        rest = self.url.split("://", 1)[1].rstrip("/")
        return int(rest.split(":")[1]) if ":" in rest else (8883 if self.tls_enabled else 1883)

    def beside(self, base: Path) -> MqttConfig:
        """This section with its TLS file paths resolved against the campus file's folder."""
        tls = self.tls
        files = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
        resolved = {
            k: v if Path(v).is_absolute() else str(base / v)
            for k, v in files.items()
            if v is not None
        }
        return self.model_copy(update={"tls": tls.model_copy(update=resolved)})
