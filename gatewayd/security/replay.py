"""Command ids already carried out, so a command runs at most once.

The ids live in memory and are made durable by the journal: every accepted command is an audit
record with its id and ``ts``, and the journal's index hands them back at start-up. Nothing
here touches a disk, so checking a command costs no I/O.

Ids are forgotten by *monotonic* age (twice the timestamp window), never by the wall clock: a
clock stepped back cannot make the cache forget an id early, and a clock that ran ahead and
was corrected cannot poison it (the timestamp window refuses those commands on its own).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping

from gatewayd.kernel.errors import CommandError, ErrorCode


class ReplayCache:
    """Seen command ids, pruned by monotonic age."""

    def __init__(self, window_s: float, seen: Mapping[str, float] | None = None) -> None:
        self.window_s = window_s
        #: id -> monotonic time it was seen (ids handed back at start-up count from now).
        self._seen: OrderedDict[str, float] = OrderedDict()
        self.load(seen or {})
        #: Ids recorded and replays refused since start.
        self.recorded = 0
        self.replays = 0

    def load(self, seen: Mapping[str, float]) -> None:
        """Ids the journal says were carried out before a restart."""
        now = time.monotonic()
        for command_id in seen:
            self._seen[command_id] = now

    def check(self, command_id: str) -> None:
        """Raise ``replayed`` if ``command_id`` was carried out within the window."""
        self._prune()
        if command_id in self._seen:
            self.replays += 1
            raise CommandError(ErrorCode.REPLAYED, f"command id {command_id!r} was already used")

    def note(self, command_id: str) -> None:
        """Mark ``command_id`` as carried out (the journal records it durably)."""
        self._seen[command_id] = time.monotonic()
        self._seen.move_to_end(command_id)
        self.recorded += 1

    def forget(self, command_id: str) -> None:
        """A command refused after all (it could not be recorded): its id may be sent again."""
        self._seen.pop(command_id, None)

    def _prune(self) -> None:
        cutoff = time.monotonic() - 2 * self.window_s
        while self._seen:
            oldest, seen_at = next(iter(self._seen.items()))
            if seen_at >= cutoff:
                break
            del self._seen[oldest]

    def __len__(self) -> int:
        return len(self._seen)

    def statistics(self) -> dict[str, int]:
        return {"recorded": self.recorded, "replays": self.replays, "cached": len(self._seen)}
