"""docs/reports.md's "Try it" commands work against the state of a gateway that ran a drill."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from tests.support.gateway import Site

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reports.md"


def commands() -> str:
    section = DOC.read_text(encoding="utf-8").split("## Try it", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```sh\n(.*?)```", section, re.DOTALL))


async def test_the_try_it_commands_write_a_report_and_the_responder_pack(
    site: Site, tmp_path: Path
) -> None:
    params = {"state": "lockdown", "scope": "building/C", "duration_s": 60, "dry_run": False}
    assert (await site.command("drill", params=params))["ok"]
    assert (await site.command("release", scope="building/C"))["ok"]
    script = re.sub(r"^STATE=.*$", f"STATE={site.config.state_dir}", commands(), flags=re.M)
    script = script.replace(".venv/bin/gatewayd", f"{sys.executable} -m gatewayd")
    script = script.replace("--out reports", f"--out {tmp_path}")
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert "DRILL" in out.decode() and "lockdown building/C" in out.decode()
    [html] = tmp_path.glob("incident-*.html")
    assert html.with_suffix(".pdf").exists()
    assert (tmp_path / "responder-pack.pdf").exists()
