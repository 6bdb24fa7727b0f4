"""What the gateway provides to the mixins that make it up (:mod:`actions`, :mod:`triggers`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gatewayd.kernel.campus import Campus
    from gatewayd.kernel.scope import Scope
    from gatewayd.rules.config import PolicyConfig
    from gatewayd.rules.engine import Engine
    from gatewayd.security.guard import CommandGuard
    from gatewayd.service.doors import ActuationReport


class GatewayHooks:
    """Members every gateway mixin relies on; :class:`gatewayd.gateway.Gateway` defines them."""

    campus: Campus
    engine: Engine
    policy: PolicyConfig
    guard: CommandGuard

    def _publish_event(
        self,
        kind: str,
        source: str,
        data: Mapping[str, Any],
        *,
        life_safety: bool,
        location: Mapping[str, Any] | None = None,
        drill: bool = False,
    ) -> None:
        raise NotImplementedError

    async def _apply(self, doors: Iterable[str], trigger_ns: int) -> ActuationReport:
        raise NotImplementedError

    def _mark_dirty(self, scope: Scope) -> None:
        raise NotImplementedError
