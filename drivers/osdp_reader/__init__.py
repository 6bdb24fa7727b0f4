"""OSDP card readers (IEC 60839-11-5) through libosdp, in control-panel mode."""

from gatewayd.drivers.osdp_reader.config import OsdpReaderConfig
from gatewayd.drivers.osdp_reader.driver import OsdpReaderDriver

__all__ = ["OsdpReaderConfig", "OsdpReaderDriver"]
