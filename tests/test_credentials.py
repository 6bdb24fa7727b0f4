"""Credentials: digests, validity, doors, hours, and the config errors that name them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from gatewayd.kernel.errors import ConfigError
from gatewayd.kernel.validation import read_toml
from gatewayd.security.credentials import (
    DEMO_SITE_KEY,
    AccessConfig,
    Credential,
    CredentialStore,
    card_digest,
    main,
    pin_digest,
    refusal,
)
from gatewayd.security.startup import refuse_demo_access
from gatewayd.service.config import load_config, parse_config

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo-campus.toml"
KEY = bytes.fromhex(DEMO_SITE_KEY)
ACCESS = AccessConfig(site_key=SecretStr(DEMO_SITE_KEY))


def cred(**fields: Any) -> Credential:
    values: dict[str, Any] = {"id": "c1", "holder": "H", "role": "staff",
                              "card": card_digest(KEY, "42")}  # fmt: skip
    return Credential.model_validate({**values, **fields})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_card_is_found_by_its_digest_and_its_pin_is_bound_to_the_card() -> None:
    credential = cred(pin=pin_digest(KEY, "42", "1234"))
    store = CredentialStore(ACCESS, [credential])
    digest, found = store.card("42")
    assert found == credential and digest == credential.card
    assert store.card("43")[1] is None
    assert store.pin_matches(credential, "42", "1234")
    assert not store.pin_matches(credential, "42", "4321")
    # The same PIN typed after another card is another digest.
    assert pin_digest(KEY, "43", "1234") != credential.pin


def test_validity_doors_and_hours_refuse_with_stable_reasons() -> None:
    weekdays = ["mon", "tue", "wed", "thu", "fri"]
    c = cred(valid_from="2026-09-01T00:00:00Z", valid_until="2027-06-30T00:00:00Z",
             doors=["A-101"], hours="07:00-17:00", days=weekdays)  # fmt: skip
    thursday_noon = at("2026-12-03T12:00:00+00:00")
    assert refusal(c, "A-101", thursday_noon) is None
    assert refusal(c, "A-101", at("2026-08-31T12:00:00+00:00")) == "not_yet_valid"
    assert refusal(c, "A-101", at("2027-06-30T00:00:00+00:00")) == "expired"
    assert refusal(c, "A-102", thursday_noon) == "door"
    assert refusal(c, "A-101", at("2026-12-03T18:30:00+00:00")) == "hours"
    assert refusal(c, "A-101", at("2026-12-05T12:00:00+00:00")) == "hours"  # a Saturday
    assert refusal(cred(), "A-119", datetime.now(UTC)) is None


def test_credential_fields_are_checked_with_clear_errors() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        cred(valid_until="2027-01-01T00:00:00")
    with pytest.raises(ValidationError, match="after valid_from"):
        cred(valid_from="2027-01-01T00:00:00Z", valid_until="2026-01-01T00:00:00Z")
    with pytest.raises(ValidationError, match="unknown days"):
        cred(days=["monday"])
    with pytest.raises(ValidationError, match="end must be after"):
        cred(hours="18:00-07:00")
    with pytest.raises(ValidationError, match="pattern"):
        cred(card="1000001")
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        AccessConfig(site_key=SecretStr("abcd"))
    with pytest.raises(ValidationError, match="unknown time zone"):
        AccessConfig(site_key=SecretStr(DEMO_SITE_KEY), timezone="Mars/Olympus")


def test_campus_file_names_duplicate_cards_unknown_doors_and_unbounded_unlocks() -> None:
    raw = read_toml(DEMO)
    raw["access"] = {
        "site_key": DEMO_SITE_KEY,
        "responder_unlock_s": 900,
        "credentials": [
            {"id": "x", "holder": "X", "role": "staff", "card": card_digest(KEY, "1")},
            {
                "id": "y",
                "holder": "Y",
                "role": "staff",
                "card": card_digest(KEY, "1"),
                "doors": ["Z-999"],
            },
        ],
    }
    raw["policy"].pop("rules")
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    text = str(caught.value)
    assert "access.credentials(y).card: the same card as 'x'" in text
    assert "access.credentials(y).doors: unknown door 'Z-999'" in text
    assert "access.responder_unlock_s: 900 exceeds policy.responder_max_s 300" in text


def test_the_demo_site_key_and_reader_keys_are_refused_outside_demo_mode() -> None:
    config = load_config(DEMO)
    assert config.access is not None and len(config.credentials) == 5
    assert refuse_demo_access(True, config.access, config.devices) == []
    problems = refuse_demo_access(False, config.access, config.devices)
    assert any("site_key is the shipped DEMO key" in p for p in problems)
    assert any("reader-a-main, reader-a101, reader-a102" in p for p in problems)


def test_digest_tool_prints_lines_for_a_credentials_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--site-key", DEMO_SITE_KEY, "1000001"]) == 0
    out = capsys.readouterr().out
    assert out == f'card = "{card_digest(KEY, "1000001")}"\n'
    assert main(["--site-key", "00", "1"]) == 2


def test_a_bad_key_is_named_but_never_repeated_in_the_error() -> None:
    raw = read_toml(DEMO)
    raw["policy"].pop("rules")
    secret = "z" * 31 + "q"
    raw["devices"][9]["scbk"] = secret
    raw["access"]["site_key"] = "y" * 64
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    text = str(caught.value)
    assert "devices[9](reader-a-main).scbk: Value error, scbk must be hex digits" in text
    assert "access.site_key: Value error, site_key must be hex digits" in text
    assert secret not in text and "y" * 64 not in text
