"""Key files, the shipped DEMO keys, start-up refusals and the security CLI commands."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from gatewayd.app.cli import main
from gatewayd.security.actors import Actor, SecurityConfig
from gatewayd.security.anchor import KEY_NAME, HeadSigner
from gatewayd.security.audit import AuditKind, AuditLog
from gatewayd.security.journal import Journal
from gatewayd.security.keys import (
    DEMO_ACTORS,
    KeyFileError,
    demo_private_key,
    is_demo_key,
    keygen,
    load_private_key,
    private_key_pem,
    public_key_text,
)
from gatewayd.security.roles import Role
from gatewayd.security.startup import refuse_unsafe

DEMO_DIR = Path(__file__).resolve().parent.parent / "configs" / "demo-keys"


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    files = keygen(tmp_path, "jdoe")
    assert stat.S_IMODE(files.private.stat().st_mode) == 0o600
    key = load_private_key(files.private)
    assert public_key_text(key) == files.public_key == files.public.read_text().strip()


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    keygen(tmp_path, "jdoe")
    with pytest.raises(KeyFileError, match="exists"):
        keygen(tmp_path, "jdoe")


@pytest.mark.parametrize("name", ["../etc/x", "a/b", "", "-flag", "a..b"])
def test_keygen_refuses_names_that_are_not_actor_ids(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyFileError):
        keygen(tmp_path, name)


def test_a_file_that_is_not_an_ed25519_key_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.key").write_text("hello")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        load_private_key(tmp_path / "junk.key")


def test_committed_demo_keys_are_the_derived_ones_and_are_recognised(tmp_path: Path) -> None:
    for actor in DEMO_ACTORS:
        key = demo_private_key(actor)
        assert (DEMO_DIR / f"{actor}.key").read_bytes() == private_key_pem(key)
        assert (DEMO_DIR / f"{actor}.pub").read_text().strip() == public_key_text(key)
        assert is_demo_key(public_key_text(key))
    assert not is_demo_key(keygen(tmp_path, "real").public_key)
    assert not is_demo_key("not base64!")


def demo_security() -> SecurityConfig:
    raw = tomllib.loads((DEMO_DIR / "actors.toml").read_text())
    return SecurityConfig.model_validate(raw["security"])


def test_demo_actors_file_is_a_valid_security_table() -> None:
    security = demo_security()
    assert {a.id for a in security.actors} == set(DEMO_ACTORS)


def test_demo_mode_accepts_everything_demo() -> None:
    assert refuse_unsafe(True, demo_security(), "mqtt://broker.example:1883", "", False) == []


def test_outside_demo_mode_every_unsafe_setting_is_named() -> None:
    problems = refuse_unsafe(False, demo_security(), "mqtt://10.1.2.3:1883", "", False)
    text = "\n".join(problems)
    assert len(problems) == 4, text
    for needle in ("DEMO keys", "password is empty", "plain mqtt://", "verify is off"):
        assert needle in text


def test_a_safe_site_starts(tmp_path: Path) -> None:
    key = keygen(tmp_path, "jdoe").public_key
    security = SecurityConfig(
        actors=(Actor(id="jdoe", public_key=key, roles=frozenset({Role.ADMINISTRATOR})),)
    )
    assert refuse_unsafe(False, security, "mqtts://broker.example:8883", None, True) == []
    assert refuse_unsafe(False, security, "mqtt://127.0.0.1:1883", "s3cret-long", True) == []
    assert refuse_unsafe(False, security, "mqtt://localhost", "s3cret-long", True) == []


@pytest.mark.parametrize(
    ("url", "password", "needle"),
    [
        ("mqtt://127.0.0.1:1883", None, "no broker credentials"),
        ("mqtt://127.0.0.1:1883", "changeme", "well-known default"),
        ("mqtt://broker.example", "s3cret-long", "plain mqtt://"),
    ],
)
def test_broker_settings_refused_outside_demo(url: str, password: str | None, needle: str) -> None:
    problems = refuse_unsafe(False, SecurityConfig(), url, password, True)
    assert any(needle in p for p in problems), problems


def test_cli_keygen_prints_the_config_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--actor", "jdoe", "--out", str(tmp_path), "--role", "responder"]) == 0
    entry = tomllib.loads(capsys.readouterr().out)["security"]["actors"][0]
    assert entry["roles"] == ["responder"]
    assert entry["public_key"] == (tmp_path / "jdoe.pub").read_text().strip()


def test_cli_audit_verify_says_ok_or_where_it_broke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(3):
        log.append(AuditKind.COMMAND, "jdoe", {"n": i})
    log.close()
    assert main(["audit", "verify", "--file", str(path)]) == 0
    assert "OK 3 records" in capsys.readouterr().out
    path.write_bytes(path.read_bytes().replace(b'"n":1', b'"n":7'))
    assert main(["audit", "verify", "--file", str(path)]) == 1
    assert "FAIL line 2" in capsys.readouterr().out


def test_a_private_key_others_may_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    files = keygen(tmp_path, "principal")
    files.private.chmod(0o644)
    with pytest.raises(KeyFileError, match=r"mode 0644.*chmod 600"):
        load_private_key(files.private)
    files.private.chmod(0o600)
    assert load_private_key(files.private)


def test_state_files_are_the_gateways_alone_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        journal = Journal(state)
        journal.open()
        journal.close()
        signer = HeadSigner.load_or_create(state, "s")
        assert signer.public_key == HeadSigner.load_or_create(state, "s").public_key
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = [p for p in state.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"journal.sqlite", KEY_NAME}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == dict.fromkeys(
        (p.name for p in files), 0o600
    )
