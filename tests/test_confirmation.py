"""Confirmation: the write's own read-back first, the next read due at the actuation time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatewayd.simulators.broker import Mosquitto
from tests.support.gateway import Site, running_site


@pytest.fixture
async def instant_site(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Site]:
    # Bolts that move at once: the read-back right after the write already agrees.
    async with running_site(mosquitto, tmp_path, actuation_ms=0) as running:
        yield running


def commands_on(site: Site, device: str) -> int:
    assert site.gateway is not None and site.gateway.supervisor is not None
    count = site.gateway.supervisor.statistics()[device]["commands"]
    assert isinstance(count, int)
    return count


async def test_a_board_whose_first_read_back_confirms_is_done_without_another_read(
    instant_site: Site,
) -> None:
    door = next(d for d in instant_site.config.doors if d.lock.device == "relay-a1")
    before = commands_on(instant_site, "relay-a1")
    reply = await instant_site.command("lock", door=door.id)
    assert reply["doors"]["confirmed"] == [door.id], reply
    # One command on the board: the write (with its read-back), no confirmation reads.
    assert commands_on(instant_site, "relay-a1") - before == 1
