"""Fake hardware speaking the real wire protocols, with fault injection, for tests and bench."""

from gatewayd.simulators.faults import Corruption, Faults
from gatewayd.simulators.relay_board import CoilWrite, RelayBoardSim, RequestSeen

__all__ = ["CoilWrite", "Corruption", "Faults", "RelayBoardSim", "RequestSeen"]
