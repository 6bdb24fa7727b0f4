"""BACnet/IP door controllers: binary outputs drive locks through the priority array."""

from gatewayd.drivers.bacnet.config import BacnetConfig
from gatewayd.drivers.bacnet.driver import BacnetDriver

__all__ = ["BacnetConfig", "BacnetDriver"]
