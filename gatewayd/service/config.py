"""The campus file, whole: the site model plus each layer's own section, validated at load.

Every error names the file, the path to the field (``doors[12](A-101).lock.device``) and what
was expected. Each section's model lives with the layer that owns it: the site in the kernel,
``[policy]`` with the rules, ``[security]`` with security, ``[mqtt]`` with the uplink and
``[console]`` with the console; this module only puts them together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gatewayd.console.config import ConsoleConfig
from gatewayd.kernel.errors import ConfigError
from gatewayd.kernel.site import SITE_KEYS, Site, SiteFile, check_site
from gatewayd.kernel.validation import describe_errors, read_toml
from gatewayd.rules.config import PolicyConfig
from gatewayd.rules.schedules import SchedulesConfig, check_doors
from gatewayd.security.actors import SecurityConfig
from gatewayd.security.credentials import (
    AccessConfig,
    Credential,
    duplicate_problems,
    load_credentials,
)
from gatewayd.service.cap import CapConfig
from gatewayd.uplink.config import MqttConfig


class CampusFile(SiteFile):
    """The file as written, with devices still raw until their drivers validate them."""

    mqtt: MqttConfig = MqttConfig()
    policy: PolicyConfig = PolicyConfig()
    #: Actors, keys, replay cache and audit log (docs/security.md).
    security: SecurityConfig = SecurityConfig()
    #: The web console; off unless the section is present.
    console: ConsoleConfig | None = None
    #: CAP 1.2 alerts on ``<prefix>/<site>/cap`` (on unless ``enabled = false``).
    cap: CapConfig = CapConfig()
    #: Door schedules and the holiday calendar (docs/rules.md, "Door schedules").
    schedules: SchedulesConfig | None = None
    #: Card readers' credentials (docs/drivers/osdp.md); no card opens a door without it.
    access: AccessConfig | None = None
    #: Where the safety state and outbox live; relative to the config file.
    state_dir: str = "var"


class Config(Site):
    """A validated campus: the site model with every section, paths resolved."""

    source: str
    mqtt: MqttConfig
    state_dir: str
    policy: PolicyConfig = PolicyConfig()
    security: SecurityConfig = SecurityConfig()
    #: The web console; off unless the section is present.
    console: ConsoleConfig | None = None
    cap: CapConfig = CapConfig()
    #: Door schedules and the holiday calendar; none unless the section is present.
    schedules: SchedulesConfig | None = None
    access: AccessConfig | None = None
    #: Every credential: ``[access]``'s own and its credentials file's (only the former for a
    #: document parsed without its file).
    credentials: tuple[Credential, ...] = ()


def load_config(path: str | Path) -> Config:
    """Read and validate a campus file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    return parse_config(read_toml(path), source=str(path))


def parse_config(raw: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate an already-parsed TOML document."""
    try:
        campus = CampusFile.model_validate(raw)
    except ValidationError as exc:
        # Say everything in one run: the section errors, and what the site part (devices,
        # references, points) would say on its own, when it can be read at all.
        raise ConfigError(source, [*describe_errors(exc, raw, model=CampusFile),
                                   *_site_problems(raw)]) from exc  # fmt: skip
    devices, problems = check_site(campus, raw)
    if campus.schedules is not None:
        problems += check_doors(campus.schedules, (d.id for d in campus.doors))
    if problems:
        raise ConfigError(source, problems)
    # systemd's StateDirectory= is passed in the environment and wins over the file.
    state_dir = Path(os.environ.get("GATEWAYD_STATE_DIR") or campus.state_dir)
    if not state_dir.is_absolute() and source != "<config>":
        state_dir = Path(source).resolve().parent / state_dir
    policy, mqtt, security = campus.policy, campus.mqtt, campus.security
    if source != "<config>":
        base = Path(source).resolve().parent
        if policy.rules is not None:
            policy = policy.model_copy(update={"rules": _beside(base, policy.rules)})
        mqtt = mqtt.beside(base)
        buildings = tuple(
            b.model_copy(update={"plan": _beside(base, b.plan)}) if b.plan else b
            for b in campus.buildings
        )
        campus = campus.model_copy(update={"buildings": buildings})
        if security.console_keys is not None:
            security = security.model_copy(
                update={"console_keys": _beside(base, security.console_keys)}
            )
    credentials: tuple[Credential, ...] = ()
    if campus.access is not None:
        # A document without its file (a test's, a tool's) has nothing to find a credentials
        # file beside: it carries only the credentials written in it.
        credentials = (
            load_credentials(campus.access, Path(source).resolve().parent)
            if source != "<config>"
            else campus.access.credentials
        )
        problems = duplicate_problems(credentials, (d.id for d in campus.doors))
        if campus.access.responder_unlock_s > policy.responder_max_s:
            problems.append(
                f"access.responder_unlock_s: {campus.access.responder_unlock_s:g}"
                f" exceeds policy.responder_max_s {policy.responder_max_s:g}"
            )
        if problems:
            raise ConfigError(source, problems)
    return Config(
        source=source,
        access=campus.access,
        credentials=credentials,
        policy=policy,
        security=security,
        console=campus.console,
        cap=campus.cap,
        schedules=campus.schedules,
        site=campus.site,
        mqtt=mqtt,
        buildings=campus.buildings,
        zones=campus.zones,
        devices=tuple(devices.values()),
        doors=campus.doors,
        inputs=campus.inputs,
        air_handlers=campus.air_handlers,
        state_dir=str(state_dir),
    )


def _site_problems(raw: Mapping[str, Any]) -> list[str]:
    """Problems of the site part alone (its own section errors were reported already)."""
    # All of it if it reads; else with a stand-in for a broken [site]; else the devices alone
    # (their drivers' checks still count). Whatever reads is checked, once.
    stand_in = {"id": "check", "name": "check"}
    attempts = (
        {k: raw[k] for k in SITE_KEYS if k in raw},
        {**{k: raw[k] for k in SITE_KEYS if k in raw}, "site": stand_in},
        {"site": stand_in, "devices": raw.get("devices", ())},
    )
    for n, part in enumerate(attempts):
        try:
            site = SiteFile.model_validate(part)
        except ValidationError:
            continue
        found = check_site(site, raw)[1]
        # The last try has no buildings or doors: only what it says of the devices counts.
        return found if n < len(attempts) - 1 else [p for p in found if p.startswith("devices")]
    return []


def _beside(base: Path, name: str) -> str:
    """A path from the campus file, relative to the file's folder."""
    return name if Path(name).is_absolute() else str(base / name)


def with_state_dir(config: Config, state_dir: Path) -> Config:
    """The campus writing its state (and camera snapshots) under ``state_dir`` (demo, tests)."""
    devices = tuple(
        dev.model_copy(update={"snapshot_dir": state_dir / "snapshots"})
        if hasattr(dev, "snapshot_dir")
        else dev
        for dev in config.devices
    )
    return config.model_copy(update={"devices": devices, "state_dir": str(state_dir)})


#: What a reload applies without a restart.
LIVE_SECTIONS = frozenset({"schedules"})


def restart_needed(running: Config, new: Config) -> list[str]:
    """The sections of ``new`` that differ from the running config and need a restart."""
    # Paths and the state dir are resolved the same way for both; compare as loaded.
    fields = set(Config.model_fields) - LIVE_SECTIONS - {"source"}
    return sorted(f for f in fields if getattr(running, f) != getattr(new, f))
