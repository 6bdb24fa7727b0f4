"""Example gatewayd driver: a door strike controller reached over UDP or TCP."""

from gatewayd_example_door.config import DoorStrikeConfig
from gatewayd_example_door.driver import DoorStrikeDriver

__all__ = ["DoorStrikeConfig", "DoorStrikeDriver"]
