"""What tests share: one poll-until helper, one event recorder, one driver harness, fixtures.

``eventually`` (``waiting``) polls state that has no event; ``Recorder`` (``recorder``) keeps
what a callback was given and lets a test await an item; ``DriverHarness`` (``harness``) runs
a driver against a simulated device. The other modules hold each area's fixtures, registered
as plugins by ``tests/conftest.py``.
"""
