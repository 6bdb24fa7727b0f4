"""The safety benches run end to end (``--quick``) and say what they measured.

Smoke runs only: each bench is started as a person starts it, and its JSON must show the
safety outcome it measures (doors released, lockdowns confirmed, fsyncs counted). No figure
is asserted against a target here; the targets are the benches' business (bench/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(name: str, *args: str) -> dict[str, Any]:
    """``python -m bench.NAME --quick ARGS``: the JSON it printed first."""
    result = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures, _ = json.JSONDecoder().raw_decode(result.stdout)
    assert isinstance(figures, dict)
    assert set(figures["load_average"]) == {"before", "after"}
    return figures


@pytest.mark.timeout(180)
def test_fire_bench_releases_every_egress_door_in_every_condition() -> None:
    figures = run_bench("fire")
    conditions = figures["conditions"]
    assert set(conditions) == {"normal", "index_locked_drill", "audit_disk_failing"}
    for name, outcome in conditions.items():
        assert outcome["trials"] >= 1, name
        assert outcome["released_every_time"] is True, (name, outcome)
        assert outcome["confirmed_ms"]["n"] == outcome["trials"], (name, outcome)
    # The faults were real: the lock held the index, the audit disk refused writes, and the
    # drill was ended by the alarm.
    assert conditions["index_locked_drill"]["journal_during"]["index_failures"] >= 1
    assert conditions["index_locked_drill"]["drills_preempted"] is True
    assert conditions["audit_disk_failing"]["injected_failures"] >= 1
    assert conditions["audit_disk_failing"]["journal_during"]["healthy_at_end"] is False


@pytest.mark.timeout(180)
def test_fsync_bench_counts_the_syncs_of_every_command_on_both_disks() -> None:
    figures = run_bench("fsync")
    for disk in ("fast_disk", "slow_disk"):
        for action in ("lockdown", "release"):
            measured = figures[disk][action]
            assert measured["to_doors_ms"]["n"] == figures["cycles_per_disk"], (disk, action)
            # Each command's records reached the disk through the journal (a lockdown's reply
            # does not wait for them; a release is recorded before its doors move).
            assert measured["journal_fsyncs_per_command"] >= 1, (disk, action, measured)
        release = figures[disk]["release"]
        assert release["fsyncs_before_doors"]["max"] >= 1, (disk, release)
    # Never on the event loop: the journal's writer, and at a first start the worker thread
    # that makes the head-signing key.
    assert "journal-writer" in figures["fsync_threads"]
    assert "MainThread" not in figures["fsync_threads"], figures["fsync_threads"]
    assert set(figures["critical_path_fsyncs"]) == {"lockdown", "release"}


@pytest.mark.timeout(180)
def test_flood_bench_confirms_lockdowns_with_and_without_garbage_and_counts_it() -> None:
    figures = run_bench("flood")
    assert figures["baseline_no_flood"]["all_ok"] is True, figures["baseline_no_flood"]
    assert figures["under_flood"]["all_ok"] is True, figures["under_flood"]
    assert figures["flood"]["sent"] > 0
    # The garbage reached the gateway's admission and was refused there, counted not recorded.
    assert figures["garbage_received_by_gateway"] >= 1, figures["admission"]
    assert figures["security"]["refusals_counted"] >= 1, figures["security"]
    assert figures["audit"]["refusal_bytes_per_garbage_message"] >= 0
    assert figures["rss_mb"]["baseline_median"] > 0
    assert figures["daemon_exit_code"] == 0
