"""Confirmation: the write's own read-back first, the next read due at the actuation time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatewayd.simulators.broker import Mosquitto
from gatewayd.simulators.campus import CampusSim
from tests.support.gateway import Site, demo_config


@pytest.fixture
async def instant_site(mosquitto: Mosquitto, tmp_path: Path) -> AsyncIterator[Site]:
    # Bolts that move at once: the read-back right after the write already agrees.
    sim = CampusSim(demo_config(mosquitto, tmp_path / "state"), free_ports=True, actuation_ms=0)
    async with sim:
        running = Site(sim, sim.config())
        await running.start_gateway()
        try:
            yield running
        finally:
            await running.stop_gateway()


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
