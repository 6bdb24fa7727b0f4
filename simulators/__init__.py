"""Fake hardware speaking the real wire protocols, with fault injection, for tests and bench.

``base`` is what every simulator shares, ``doors`` the door model of every controller,
``control`` the interface that drives a running campus from outside (docs/simulators.md).
"""

from gatewayd.simulators.base import Listener, Simulator
from gatewayd.simulators.doors import DoorControls, DoorMechanics
from gatewayd.simulators.faults import Corruption, Faults
from gatewayd.simulators.relay_board import CoilWrite, RelayBoardSim, RequestSeen

__all__ = [
    "CoilWrite",
    "Corruption",
    "DoorControls",
    "DoorMechanics",
    "Faults",
    "Listener",
    "RelayBoardSim",
    "RequestSeen",
    "Simulator",
]
