"""BACnet/IP door controllers: binary outputs drive locks through the priority array."""

from drivers.bacnet.config import BacnetConfig
from drivers.bacnet.driver import BacnetDriver

__all__ = ["BacnetConfig", "BacnetDriver"]
