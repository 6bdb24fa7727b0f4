"""Driver registry: ``name -> "module:Class"`` from the ``gatewayd.drivers`` entry points.

Built-in drivers register through the same entry-point group as third-party ones, and a
driver's module (with its vendor library) is imported only when a config names it.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module, invalidate_caches
from importlib.metadata import entry_points
from typing import cast

from gatewayd.kernel.driver import AnyDriver, Driver
from gatewayd.kernel.errors import DriverNotFound

GROUP = "gatewayd.drivers"

_extra: dict[str, str] = {}


def register(name: str, target: str) -> None:
    """Register a driver at run time (tests and embedding); prefer entry points."""
    _extra[name] = target
    load_driver.cache_clear()


@cache
def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def refresh() -> None:
    """Forget discovered entry points and loaded drivers, so packages installed since count."""
    invalidate_caches()
    _entry_points.cache_clear()
    load_driver.cache_clear()


def available() -> dict[str, str]:
    """All known driver names and their targets, without importing any of them."""
    return {**_entry_points(), **_extra}


@cache
def load_driver(name: str) -> type[AnyDriver]:
    """Import the driver class registered under ``name``; one clear error if that fails."""
    known = available()
    target = known.get(name)
    if target is None:
        names = ", ".join(sorted(known)) or "none"
        raise DriverNotFound(f"unknown driver {name!r} (registered drivers: {names})")
    module_name, _, attr = target.partition(":")
    try:
        module = import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise DriverNotFound(f"driver {name!r} ({target}) failed to load: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise DriverNotFound(f"driver {name!r} ({target}) is not a gatewayd Driver subclass")
    return cast("type[AnyDriver]", cls)
