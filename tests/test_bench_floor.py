"""The floor bench runs end to end (``--quick``): both sides measured, nothing missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_floor_bench_quick_measures_gateway_and_floor_side_by_side() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.floor", "--quick"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    head, _, human = run.stdout.partition("\n\nFloor bench:")
    results = json.loads(head)
    assert results["failed_doors"] == 0
    for side in ("floor", "gateway"):
        for key in ("on_wire", "confirmed"):
            assert results["lockdown_ms"][side][key]["n"] == results["cycles"]
    for side in ("naive", "gateway"):
        single = results["single_door_ms"][side]
        assert single["missing_writes"] == 0, single
        assert single["publish_to_coil"]["n"] == results["commands"]
        assert single["publish_to_reply"]["n"] == results["commands"]
        assert single["burst_32_all_written"]["n"] >= 2
        assert single["input_flip_to_mqtt"]["n"] >= 4
        assert single["rate"]["missing_writes"] == 0, single["rate"]
        assert single["rate"]["publish_to_coil"]["n"] == single["rate"]["commands"]
        assert single["rate"]["cpu_percent"] >= 0
        idle = results["idle"][side]
        assert idle["rss_mb"] > 0 and idle["cpu_percent"] >= 0
    assert set(results["single_door_ms"]["ratio"]) == {
        "publish_to_coil",
        "publish_to_reply",
        "burst_32_all_written",
        "input_flip_to_mqtt",
        "rate_publish_to_coil",
    }
    cli = results["single_door_ms"]["gateway"]["cli_lockdown_s"]
    assert cli["cli"]["n"] == cli["floor"]["n"] == 1 and cli["ratio_p50"] > 0
    assert len(results["load_average"]["before"]) == 3
    assert "lockdown: every door confirmed" in human
    assert "load average" in human
    assert "input flip -> MQTT" in human and "idle, 2 boards" in human
    assert "CLI lockdown, whole process" in human
