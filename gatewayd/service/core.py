"""What every deciding service works with, built once by the gateway."""

from __future__ import annotations

from dataclasses import dataclass

from gatewayd.kernel.campus import Campus
from gatewayd.rules.config import PolicyConfig
from gatewayd.rules.engine import Engine
from gatewayd.security.guard import CommandGuard
from gatewayd.service.actuation import Actuator
from gatewayd.service.publisher import Publisher
from gatewayd.service.reporting import Reporting


@dataclass(frozen=True, slots=True)
class Core:
    """The campus, its policy and sources, the command gate, and the way out to doors and world."""

    campus: Campus
    policy: PolicyConfig
    engine: Engine
    #: Audits every decision (and admits commands).
    guard: CommandGuard
    publisher: Publisher
    actuator: Actuator
    reporting: Reporting
