"""Modbus TCP lock relay boards: coils drive locks, discrete inputs report doors and alarms."""

from gatewayd.drivers.modbus_relay.config import ModbusRelayConfig
from gatewayd.drivers.modbus_relay.driver import ModbusRelayDriver

__all__ = ["ModbusRelayConfig", "ModbusRelayDriver"]
