"""Packages and where they live; everything else is in pyproject.toml.

The repository keeps one folder per role at the top (``drivers/``, ``rules/``,
``simulators/``), but they install inside the ``gatewayd`` package, so no generic top-level
name (``rules``, ``drivers``) lands in site-packages. Listed here because pyproject's
``packages.find`` cannot rename what it finds.
"""

from setuptools import find_packages, setup

#: Import name -> repository folder, for the folders that live outside ``gatewayd/``.
MAPPED = {
    "gatewayd.drivers": "drivers",
    "gatewayd.rules": "rules",
    "gatewayd.simulators": "simulators",
}

packages = ["gatewayd", *(f"gatewayd.{p}" for p in find_packages("gatewayd"))]
for name, folder in MAPPED.items():
    packages += [name, *(f"{name}.{p}" for p in find_packages(folder))]

setup(packages=packages, package_dir={"gatewayd": "gatewayd", **MAPPED})
