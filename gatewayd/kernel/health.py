"""Link health: failures in a row take a device offline, one success brings it back.

Every driver decides health the same way, so it is decided here: a device is not offline on
its first failed request (one lost datagram is not an outage), it is offline after
``offline_after`` failures in a row or at once when the connection itself is gone, and it is
online (or degraded, with the reason) after the next success. The driver's own reporting
(``Driver._set_health``) turns each decision into a ``DeviceHealth`` event.
"""

from __future__ import annotations

from collections.abc import Callable

from structlog.typing import FilteringBoundLogger

from gatewayd.kernel.events import Health

#: How a decision is reported: the driver's ``_set_health(health, detail)``.
Report = Callable[[Health, str], None]


class LinkHealth:
    """Health of one device's link, from its successes and failures.

    Changes are logged as ``<protocol>.online``, ``<protocol>.degraded`` and
    ``<protocol>.offline`` (e.g. ``modbus.offline``) on the driver's logger, and so is a new
    reason while not online: the person fixing a device needs to see offline turn from
    "no reply" into "connection refused".
    """

    def __init__(
        self,
        report: Report,
        log: FilteringBoundLogger,
        protocol: str,
        *,
        offline_after: int | None = None,
        degraded_after: int | None = None,
    ) -> None:
        #: Failures in a row that take the device offline; None: only :meth:`offline` does.
        self.offline_after = offline_after
        #: Failures in a row that degrade an online device; None: failures never degrade.
        self.degraded_after = degraded_after
        #: Failures since the last success.
        self.failures = 0
        #: Reason of the last failure ("" before the first).
        self.last_error = ""
        self._report = report
        self._log = log
        self._protocol = protocol
        # What was last reported; a driver starts offline until its first success.
        self._health = Health.OFFLINE
        self._detail = ""

    @property
    def health(self) -> Health:
        return self._health

    def succeeded(self, degraded: str = "", note: str = "") -> None:
        """An exchange worked: online, or degraded for ``degraded`` (what is wrong).

        ``note`` is said of an online link that works in a lesser way nothing needs fixing
        for (e.g. "polled: no COV"); a new note is reported like a new reason."""
        self.failures = 0
        if degraded:
            self._decide(Health.DEGRADED, degraded)
        else:
            self._decide(Health.ONLINE, note)

    def failed(self, reason: str) -> bool:
        """Count a failure; True once they reach ``offline_after`` in a row (start over)."""
        self.failures += 1
        self.last_error = reason
        if self.offline_after is not None and self.failures >= self.offline_after:
            self._decide(Health.OFFLINE, reason)
            return True
        if (
            self.degraded_after is not None
            and self.failures >= self.degraded_after
            # Only an online link degrades: a failure says nothing new about an offline one,
            # and a degraded one keeps the reason it first gave (a timeout names each
            # request, so every miss would otherwise be "news").
            and self._health is Health.ONLINE
        ):
            self._decide(Health.DEGRADED, reason)
        return False

    def offline(self, reason: str) -> None:
        """The link is gone (refused, closed, reset): offline now, whatever the count."""
        self.last_error = reason
        self._decide(Health.OFFLINE, reason)

    def stopped(self) -> None:
        """The driver stopped: offline, without a log line (stopping is not a fault)."""
        self._health, self._detail = Health.OFFLINE, "driver stopped"
        self._report(Health.OFFLINE, "driver stopped")

    def _decide(self, health: Health, detail: str) -> None:
        if health is self._health and detail == self._detail:
            return
        self._health, self._detail = health, detail
        if health is Health.ONLINE:
            self._log.info(f"{self._protocol}.online", **({"note": detail} if detail else {}))
        else:
            self._log.warning(f"{self._protocol}.{health}", reason=detail, failures=self.failures)
        self._report(health, detail)
