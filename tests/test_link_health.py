"""Link health: the one place a driver decides online, degraded and offline."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from gatewayd.kernel.events import Health
from gatewayd.kernel.health import LinkHealth

Reports = list[tuple[Health, str]]


def link(reports: Reports, **kwargs: Any) -> LinkHealth:
    log = structlog.get_logger(__name__).bind(device="dev-1")
    return LinkHealth(lambda h, d: reports.append((h, d)), log, "modbus", **kwargs)


def test_link_goes_offline_after_the_threshold_and_reports_the_reason() -> None:
    reports: Reports = []
    health = link(reports, offline_after=3)
    health.succeeded()
    assert not health.failed("no reply")
    assert not health.failed("no reply")
    assert health.failed("connection refused")
    assert health.health is Health.OFFLINE
    assert reports == [(Health.ONLINE, ""), (Health.OFFLINE, "connection refused")]
    assert (health.failures, health.last_error) == (3, "connection refused")


def test_one_success_brings_the_link_back_online_and_restarts_the_count() -> None:
    reports: Reports = []
    health = link(reports, offline_after=2)
    health.failed("a")
    health.failed("a")
    health.succeeded()
    health.failed("b")
    assert health.health is Health.ONLINE
    assert reports == [(Health.OFFLINE, "a"), (Health.ONLINE, "")]


def test_a_new_reason_is_reported_while_offline_and_a_repeated_one_is_not() -> None:
    reports: Reports = []
    health = link(reports, offline_after=1)
    for reason in ["no reply", "no reply", "refused", "refused"]:
        health.failed(reason)
    health.offline("refused")
    assert reports == [(Health.OFFLINE, "no reply"), (Health.OFFLINE, "refused")]


def test_success_with_a_problem_is_degraded_with_the_reason() -> None:
    reports: Reports = []
    health = link(reports, offline_after=2)
    health.succeeded(degraded="missing binary-input:7")
    health.succeeded(degraded="missing binary-input:7")
    health.succeeded()
    assert reports == [
        (Health.DEGRADED, "missing binary-input:7"),
        (Health.ONLINE, ""),
    ]


def test_failures_degrade_an_online_link_once_and_never_an_offline_one() -> None:
    reports: Reports = []
    health = link(reports, offline_after=3, degraded_after=1)
    health.failed("missed 0")
    health.succeeded()
    health.failed("missed 1")
    health.failed("missed 2")
    assert health.failed("missed 3")
    assert reports == [
        (Health.ONLINE, ""),
        (Health.DEGRADED, "missed 1"),
        (Health.OFFLINE, "missed 3"),
    ]
    assert health.last_error == "missed 3"


def test_without_a_threshold_only_offline_takes_the_link_down() -> None:
    reports: Reports = []
    health = link(reports, degraded_after=3)
    health.succeeded()
    for _ in range(10):
        health.failed("subscription lost")
    assert health.health is Health.DEGRADED
    health.offline("connection reset")
    assert reports[-1] == (Health.OFFLINE, "connection reset")


def test_stopping_reports_offline_driver_stopped_even_when_already_offline() -> None:
    reports: Reports = []
    health = link(reports, offline_after=1)
    health.failed("refused")
    health.stopped()
    assert reports[-1] == (Health.OFFLINE, "driver stopped")


@pytest.mark.parametrize("quiet", [False, True])
def test_changes_are_logged_as_protocol_dot_health_with_the_device(quiet: bool) -> None:
    reports: Reports = []
    health = link(reports, offline_after=1)
    with capture_logs() as logs:
        health.succeeded()
        health.failed("refused")
        if quiet:
            health.failed("refused")
    assert [(e["event"], e["log_level"], e["device"]) for e in logs] == [
        ("modbus.online", "info", "dev-1"),
        ("modbus.offline", "warning", "dev-1"),
    ]
    assert logs[1]["reason"] == "refused"
