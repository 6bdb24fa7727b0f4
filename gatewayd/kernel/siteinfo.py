"""The smallest part of the site model: which site this is, and the SRP states and hazards.

Kept apart from ``site.py`` so that operator commands and the command envelope load without
the whole site model (and its drivers): ``gatewayd lockdown`` needs the site id, not doors.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from gatewayd.kernel.validation import Model


class SiteConfig(Model):
    #: Site id, used in every MQTT topic (``gatewayd/<id>/...``).
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    name: str
    #: Demo mode: shipped demo credentials are accepted. Never on a real site.
    demo: bool = False


class SrpState(StrEnum):
    """The Standard Response Protocol states a scope can be in."""

    NORMAL = "normal"
    HOLD = "hold"
    SECURE = "secure"
    LOCKDOWN = "lockdown"
    EVACUATE = "evacuate"
    SHELTER = "shelter"


class Hazard(StrEnum):
    """What a SHELTER is for; each hazard has its own door actions in the policy."""

    TORNADO = "tornado"
    HAZMAT = "hazmat"
    EARTHQUAKE = "earthquake"
    SEVERE_WEATHER = "severe_weather"
    BOMB = "bomb"
