"""The campus file as operator commands read it: which site, and which broker.

``gatewayd lockdown``, ``status`` and the other operator commands need the site id, its demo
flag and the ``[mqtt]`` section, nothing else: reading the whole campus would validate every
device with its driver, importing pymodbus, bacpypes3, zeep and OpenCV to send one message.
The rest of the file is left to ``gatewayd check`` and the daemon.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict

from gatewayd.kernel.siteinfo import SiteConfig
from gatewayd.kernel.validation import Model, read_toml, validated
from gatewayd.uplink.config import MqttConfig


class OperatorConfig(Model):
    """``[site]`` and ``[mqtt]`` of a campus file; every other section is ignored here."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    site: SiteConfig
    mqtt: MqttConfig = MqttConfig()


def load_operator_config(path: str | Path) -> OperatorConfig:
    """Read a campus file's site and broker; raise :class:`ConfigError` naming what is wrong."""
    path = Path(path)
    raw = read_toml(path)
    config = validated(OperatorConfig, raw, str(path))
    return config.model_copy(update={"mqtt": config.mqtt.beside(path.resolve().parent)})
