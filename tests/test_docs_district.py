"""docs/district.md's "Try it on one machine" works when pasted: a district lockdown through
a NATS district broker and the demo school's bridged Mosquitto, on free ports."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from gatewayd.simulators.broker import free_port

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "district.md"
#: The ports and folder the doc uses, swapped for free ones.
DOC_PORTS = ("1884", "1885", "4322")


def try_it() -> str:
    section = DOC.read_text(encoding="utf-8").split("## Try it on one machine", 1)[1]
    blocks: list[str] = re.findall(r"```sh\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    return blocks[0]


async def test_the_try_it_block_runs_a_district_lockdown_as_shown(tmp_path: Path) -> None:
    script = try_it().replace("/tmp/district", str(tmp_path / "district"))
    for port in DOC_PORTS:
        assert port in script
        script = script.replace(port, str(free_port()))
    env = {
        **os.environ,
        "PATH": os.pathsep.join(
            (str(Path(sys.executable).parent), "/usr/sbin", os.environ["PATH"])
        ),
        "PYTHONUNBUFFERED": "1",
    }
    wrapped = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + script
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", wrapped, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert "lockdown: 1 confirmed, 0 failed, 0 unreachable" in text
    assert re.search(r"demo-school\s+CONFIRMED\s+[\d.]+ s", text)
    assert re.search(r"demo-school\s+lockdown\s+.*\sOK$", text, re.MULTILINE), text
    assert "release: 1 confirmed, 0 failed, 0 unreachable" in text
