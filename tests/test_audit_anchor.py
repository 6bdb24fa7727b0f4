"""The audit chain anchored off the box: signed heads published, and a cut log caught by them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from gatewayd.security.anchor import HEAD_TYPE, check_signature
from gatewayd.security.audit import head_path, verify
from gatewayd.security.canonical import canonical
from tests.support.gateway import Site, run_cli
from tests.support.mqtt import Collector


async def test_published_heads_catch_a_log_cut_back_consistently(
    site: Site, mqtt_collect: Callable[[str], Awaitable[Collector]], tmp_path: Path
) -> None:
    assert site.gateway is not None
    base = f"{site.config.mqtt.prefix}/{site.config.site.id}"
    audit = await mqtt_collect(f"{base}/event/audit")
    await site.stop_gateway()
    site.config = site.config.model_copy(update={"security": site.config.security.model_copy(
        update={"head_interval_s": 0.5})})  # fmt: skip
    await site.start_gateway()
    assert (await site.command("lockdown", scope="building/A"))["ok"] is True
    assert (await site.command("release", scope="building/A"))["ok"] is True

    def is_head(m: object) -> bool:
        return b'"audit_head"' in getattr(m, "payload", b"")

    await audit.wait_for(is_head, timeout_s=10)
    # The release is recorded: wait for a head at or past it.
    last_seq = max(int(json.loads(line)["seq"]) for line in _log(site).read_text().splitlines())
    await audit.wait_for(lambda m: is_head(m) and json.loads(m.payload)["data"]["seq"] >= last_seq,
                         timeout_s=10)  # fmt: skip
    await site.stop_gateway()
    heads = [json.loads(m.payload) for m in audit.items if is_head(m)]
    assert all(h["data"]["type"] == HEAD_TYPE for h in heads)
    check_signature(heads[-1]["data"])  # signed by the gateway's key
    published = tmp_path / "heads.jsonl"
    published.write_text("".join(json.dumps(h) + "\n" for h in heads))

    log = _log(site)
    code, out, _ = await run_cli("audit", "verify", "--file", str(log), "--heads", str(published))
    assert code == 0, out

    # Someone who can write the state directory cuts the last records and fixes the head up:
    # the chain alone still verifies; the heads published before do not agree.
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-3]))
    kept = json.loads(lines[-4])
    head_path(log).write_bytes(canonical({"seq": kept["seq"], "hash": kept["hash"]}) + b"\n")
    assert verify(log).ok
    code, out, _ = await run_cli("audit", "verify", "--file", str(log), "--heads", str(published))
    assert code != 0
    assert "were cut" in out, out


async def test_an_emptied_log_of_a_used_state_dir_does_not_verify(site: Site) -> None:
    await site.stop_gateway()
    log = _log(site)
    log.write_bytes(b"")
    head_path(log).unlink()
    code, out, _ = await run_cli("audit", "verify", "--file", str(log))
    assert code != 0 and "emptied" in out, out


def _log(site: Site) -> Path:
    return Path(site.config.state_dir) / site.config.security.audit_log
