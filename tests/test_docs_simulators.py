"""docs/simulators.md's control-interface commands work when pasted, and answer as shown.

The first ``sh`` block of the section starts the campus; the others are pasted, in order,
into one shell, as a reader would. Each ``# {...}`` comment is the answer the command above
it prints (up to ``...`` where ports differ from run to run). The documented port is
swapped for a free one.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "simulators.md"
DOC_PORT = "7070"


def control_section() -> tuple[str, str, list[str]]:
    """The campus command, the client commands and the answers the doc shows."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## The control interface", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    server, *clients = blocks
    script = "\n".join(clients)
    expected = [line[2:] for line in script.splitlines() if line.startswith("# ")]
    return server.strip(), script, expected


def matches(got: str, shown: str) -> bool:
    head, dots, _ = shown.partition("...")
    return got.startswith(head) if dots else got == shown


@pytest.mark.skipif(shutil.which("socat") is None, reason="the doc's socat example needs socat")
async def test_every_control_command_in_the_doc_answers_as_shown() -> None:
    server, script, expected = control_section()
    assert server.startswith("python -m gatewayd.simulators campus")
    assert len(expected) >= 15
    # `python` in the doc is the venv's, as it is for a reader who activated it.
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONUNBUFFERED": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        "exec " + server.replace(DOC_PORT, "0"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        port = str(ready["ports"]["control"])
        client = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            script.replace(DOC_PORT, port),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(client.communicate(), 60)
        assert client.returncode == 0, err.decode()
        got = out.decode().splitlines()
        assert len(got) == len(expected), "\n".join(got)
        for line, shown in zip(got, expected, strict=True):
            assert matches(line, shown), f"got:   {line}\nshown: {shown}"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
