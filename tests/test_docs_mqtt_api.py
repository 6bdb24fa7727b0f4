"""docs/mqtt-api.md's "Examples to paste" work: signed by the CLI, sent by mosquitto_pub.

Each ``sh`` block of the section runs, in order, in one bash from the repository's folder,
against a running demo-campus gateway; ``PORT`` is set to its broker's.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import pytest

from gatewayd.security.audit import read_records
from tests.support.gateway import Site
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "mqtt-api.md"


def examples() -> str:
    section = DOC.read_text(encoding="utf-8").split("### Examples to paste", 1)[1]
    section = section.split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```sh\n(.*?)```", section, re.DOTALL))


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="needs mosquitto-clients")
async def test_every_example_is_carried_out_by_the_gateway(site: Site) -> None:
    script = examples().replace("PORT=1883", f"PORT={site.config.mqtt.port}")
    # The doc runs the CLI from the venv the Makefile makes; here, the one running the tests.
    script = script.replace(".venv/bin/gatewayd", f"{sys.executable} -m gatewayd")
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script + "\nwait\n", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    # The first example's reply, printed by mosquitto_sub: the lockdown was carried out.
    assert b'"ok":true' in out and b'"action":"lockdown"' in out, out
    assert site.gateway is not None
    engine = site.gateway.engine
    log = site.gateway.journal.audit_path

    def states() -> set[tuple[str, str]]:
        return {(str(r["data"].get("state")), str(r["data"].get("scope")))
                for r in read_records(log) if r["kind"] == "state"}  # fmt: skip

    # Each example was carried out (in the order the gateway's workers took them: the campus
    # shelter, a wider state, ends a narrower evacuation, and pre-empts the drill).
    want = {("lockdown", "building/A"), ("normal", "building/A"), ("evacuate", "building/C"),
            ("shelter", "campus"), ("lockdown", "building/B")}  # fmt: skip
    await eventually(lambda: want <= states())
    await eventually(lambda: engine.get("responder:door/A-101") is not None)
    assert engine.get("srp:campus").state == "shelter"  # type: ignore[union-attr]
    assert engine.get("manual:door/A-101") is not None


def cap_examples() -> str:
    section = DOC.read_text(encoding="utf-8").split("#### CAP examples to paste", 1)[1]
    section = section.split("\n## ", 1)[0]
    setup = "PORT=1883\nC=configs/demo-campus.toml\n"
    return setup + "\n".join(re.findall(r"```sh\n(.*?)```", section, re.DOTALL))


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="needs mosquitto-clients")
async def test_cap_example_receives_an_alert_and_its_cancel(site: Site) -> None:
    script = cap_examples().replace("PORT=1883", f"PORT={site.config.mqtt.port}")
    script = script.replace(".venv/bin/gatewayd", f"{sys.executable} -m gatewayd")
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out.decode(), err.decode())
    assert out.decode().split() == ["1", "1"], out
