"""Shared fixtures; each area keeps its own in a ``fixtures_*`` module registered here."""

pytest_plugins = ["tests.fixtures_modbus", "tests.fixtures_mqtt", "tests.fixtures_gateway"]
