"""PSAP-linked radio over a serial line: emergency status and text, acknowledged, supervised."""

from gatewayd.drivers.psap_radio.config import PsapRadioConfig
from gatewayd.drivers.psap_radio.driver import PsapRadioDriver

__all__ = ["PsapRadioConfig", "PsapRadioDriver"]
