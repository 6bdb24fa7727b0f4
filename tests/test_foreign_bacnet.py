"""BACnet against software the project did not write, over real UDP on loopback.

Both directions: the driver against a controller that is a *plain* bacpypes3 application
written here (bacpypes3's own objects, priority arrays and COV; none of our simulator's code),
and our simulator answering plain bacpypes3 client calls as a controller would.

The controller has no ReadPropertyMultiple, as many small controllers do. bacpypes3 offers a
service when its application has a ``do_<Request>`` helper: it answers requests with no
helper ``reject: unrecognized-service`` and builds ``protocol-services-supported`` by the same
introspection (``Application.get_services_supported``), so hiding the helpers takes the
service away honestly: not listed, and rejected if asked anyway.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from bacpypes3.apdu import ErrorRejectAbortNack
from bacpypes3.app import Application
from bacpypes3.basetypes import ServicesSupported
from bacpypes3.local.binary import BinaryInputObject, BinaryOutputObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import Null, ObjectIdentifier

from gatewayd.drivers.bacnet import BacnetConfig, BacnetDriver
from gatewayd.kernel.events import DeviceHealth, Health, PointWrite, WritePoints
from tests.support.harness import Harnesses, changed, health
from tests.support.waiting import eventually

INSTANCE = 2601
DOORS = 2
POINTS = frozenset(
    {*(f"binary-output:{i}" for i in range(DOORS)), *(f"binary-input:{i}" for i in range(DOORS))}
)
RPM = "ReadPropertyMultipleRequest"
#: What every object of the controller says of itself (bacpypes3 requires these to be set).
HEALTHY = {"statusFlags": [0, 0, 0, 0], "eventState": "normal", "outOfService": False}


def free_udp_port() -> int:
    """A UDP port on loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SmallController(Application):  # type: ignore[misc]
    """bacpypes3's application without ReadPropertyMultiple / WritePropertyMultiple."""

    #: Services taken away (their ``do_`` helpers look absent).
    missing = frozenset({"do_ReadPropertyMultipleRequest", "do_WritePropertyMultipleRequest"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Names of the requests that reached the application.
        self.seen: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        if name in type(self).missing:
            raise AttributeError(name)
        return super().__getattribute__(name)

    async def indication(self, apdu: Any) -> None:
        self.seen.append(type(apdu).__name__)
        await super().indication(apdu)


class BareController(SmallController):
    """Without SubscribeCOV as well."""

    missing = SmallController.missing | {"do_SubscribeCOVRequest"}


def controller_objects(address: str, doors: int, max_apdu: int) -> list[Any]:
    """Door ``i``'s lock on ``binary-output,i`` (relinquish default inactive = unlocked), its
    position on ``binary-input,i`` (active = closed); a device that cannot segment."""
    objects: list[Any] = [
        DeviceObject(
            objectIdentifier=("device", INSTANCE),
            objectName="foreign-controller",
            vendorIdentifier=999,
            segmentationSupported="no-segmentation",
            maxApduLengthAccepted=max_apdu,
        ),
        NetworkPortObject(address, objectIdentifier=("network-port", 1), objectName="port"),
    ]
    for i in range(doors):
        objects.append(
            BinaryOutputObject(
                objectIdentifier=("binary-output", i),
                objectName=f"lock-{i}",
                presentValue="inactive",
                relinquishDefault="inactive",
                polarity="normal",
                **HEALTHY,
            )
        )
        objects.append(
            BinaryInputObject(
                objectIdentifier=("binary-input", i),
                objectName=f"door-{i}",
                presentValue="active",
                polarity="normal",
                **HEALTHY,
            )
        )
    return objects


@pytest.fixture
async def controllers() -> AsyncIterator[Callable[..., tuple[SmallController, str]]]:
    """Plain bacpypes3 controllers on free loopback ports; every one closed at the end."""
    apps: list[SmallController] = []

    def make(
        cls: type[SmallController] = SmallController, doors: int = DOORS, max_apdu: int = 1476
    ) -> tuple[SmallController, str]:
        address = f"127.0.0.1:{free_udp_port()}"
        app = cls.from_object_list(controller_objects(address, doors, max_apdu))
        apps.append(app)
        return app, address

    try:
        yield make
    finally:
        for app in apps:
            app.close()


def driver_config(address: str) -> BacnetConfig:
    return BacnetConfig(id="foreign", driver="bacnet", address=address,
                        device_instance=INSTANCE, local_address="127.0.0.1:0",
                        poll_interval_ms=50, timeout_ms=500)  # fmt: skip


def lock(door: int, value: bool, priority: int) -> WritePoints:
    return WritePoints((PointWrite(f"binary-output:{door}", value, priority),))


def slots(app: Application, door: int) -> dict[int, int]:
    """The occupied slots of a lock's priority array, as bacpypes3 holds them."""
    array = app.get_object_id(ObjectIdentifier(f"binary-output,{door}")).priorityArray
    return {i + 1: int(getattr(s, s._choice)) for i, s in enumerate(array) if s.null is None}


def present(app: Application, objid: str) -> int:
    return int(app.get_object_id(ObjectIdentifier(objid)).presentValue)


async def test_the_driver_locks_and_unlocks_a_bacpypes3_controller_without_rpm(
    controllers: Callable[..., tuple[SmallController, str]], harnesses: Harnesses
) -> None:
    app, address = controllers()
    services = app.device_object.protocolServicesSupported
    assert not services[ServicesSupported.readPropertyMultiple], "the peer is as described"
    config = driver_config(address)
    run = await harnesses.start(lambda emit: BacnetDriver(config, POINTS, emit), app)
    event = await run.wait_for(health(Health.ONLINE), 5)
    assert isinstance(event, DeviceHealth)
    assert "ReadProperty per property" in event.detail
    # Its doors: both closed (active), both unlocked.
    await run.wait_for(changed("binary-input:1", True), 5)
    await run.wait_for(changed("binary-output:0", False), 5)

    result = await run.driver.execute(lock(0, True, 5))
    assert {v.point: v.value for v in result.values}["binary-output:0"] is True
    assert slots(app, 0) == {5: 1} and present(app, "binary-output,0") == 1
    assert slots(app, 1) == {} and present(app, "binary-output,1") == 0

    # Release to normal: slot 16 is written first, then 5 relinquished.
    result = await run.driver.execute(lock(0, False, 16))
    assert {v.point: v.value for v in result.values}["binary-output:0"] is False
    assert slots(app, 0) == {16: 0} and present(app, "binary-output,0") == 0

    # A door opened at the controller reaches the driver (bacpypes3's own COV, or the poll).
    mark = run.mark()
    app.get_object_id(ObjectIdentifier("binary-input,1")).presentValue = "inactive"
    await run.wait_for(changed("binary-input:1", False), 5, since=mark)

    assert RPM not in app.seen and "ReadPropertyRequest" in app.seen
    assert "WritePropertyRequest" in app.seen
    assert run.driver.statistics()["rpm"] == 0
    assert run.driver.health is Health.ONLINE


async def test_a_bacpypes3_controller_with_everything_taken_away_is_locked_down_confirmed(
    controllers: Callable[..., tuple[SmallController, str]], harnesses: Harnesses
) -> None:
    # No RPM, no COV, no segmentation, max-APDU 50, no time-of-device-restart. (bacpypes3
    # sizes a reply by what the *client* accepts, so it still sends a 17-entry object list
    # whole; the simulator's --max-apdu models a controller that cannot, in
    # tests/test_bacnet_small.py and the contract suite.)
    doors = 8
    app, address = controllers(BareController, doors=doors, max_apdu=50)
    points = frozenset({*(f"binary-output:{i}" for i in range(doors)), "binary-input:7"})
    config = driver_config(address)
    run = await harnesses.start(lambda emit: BacnetDriver(config, points, emit), app)
    event = await run.wait_for(health(Health.ONLINE), 5)
    assert isinstance(event, DeviceHealth)
    assert "COV refused" in event.detail and "ReadProperty per property" in event.detail
    assert run.driver.statistics()["missing_points"] == 0
    writes = tuple(PointWrite(f"binary-output:{i}", True, 5) for i in range(doors))
    result = await run.driver.execute(WritePoints(writes))
    values = {v.point: v.value for v in result.values}
    assert all(values[f"binary-output:{i}"] is True for i in range(doors)), values
    assert all(slots(app, i) == {5: 1} for i in range(doors))
    assert {"ReadPropertyMultipleRequest", "SubscribeCOVRequest"} & set(app.seen) == {
        "SubscribeCOVRequest"
    }, "RPM never asked; COV asked and refused"
    # No COV: a door opened at the controller is found by the poll.
    mark = run.mark()
    app.get_object_id(ObjectIdentifier("binary-input,7")).presentValue = "inactive"
    await run.wait_for(changed("binary-input:7", False), 5, since=mark)


# --- our simulator, asked by a plain bacpypes3 client ---------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[Application]:
    """A plain bacpypes3 application used as a client (an operator's workstation)."""
    address = f"127.0.0.1:{free_udp_port()}"
    app = Application.from_object_list(
        [
            DeviceObject(
                objectIdentifier=("device", 2699), objectName="workstation", vendorIdentifier=999
            ),
            NetworkPortObject(address, objectIdentifier=("network-port", 1), objectName="port"),
        ]
    )
    try:
        yield app
    finally:
        app.close()


async def call(coro: Any) -> Any:
    """A bacpypes3 client call; an Error/Reject/Abort comes back as the value, not raised."""
    try:
        return await coro
    except ErrorRejectAbortNack as nack:
        return nack


def refusal(reply: Any) -> str:
    """``class:code`` of an Error, the reason of a Reject/Abort ('' for anything else)."""
    if not isinstance(reply, ErrorRejectAbortNack):
        return ""
    code = getattr(reply, "errorCode", None)
    return str(code) if code is not None else str(reply.apduAbortRejectReason)


async def test_our_simulator_answers_bacpypes3_reads_and_priority_writes(
    bacnet_sims: Callable[..., Any], client: Application
) -> None:
    sim = await bacnet_sims(device_instance=2611)
    at = Address(sim.address)
    device = ObjectIdentifier(f"device,{sim.device_instance}")
    assert str(await call(client.read_property(at, device, "object-name"))) == sim.name
    objects = await call(client.read_property(at, device, "object-list"))
    assert {str(o) for o in objects} >= {"binary-output,0", "binary-input,3"}
    # One element by index, as a client of a device that cannot segment reads it.
    assert await call(client.read_property(at, device, "object-list", array_index=0)) == 7
    services = await call(client.read_property(at, device, "protocol-services-supported"))
    assert services[ServicesSupported.readPropertyMultiple]
    assert services[ServicesSupported.subscribeCOV]

    bo0 = ObjectIdentifier("binary-output,0")
    assert await call(client.write_property(at, bo0, "present-value", "active", priority=5)) is None
    assert sim.priority_array(0) == {5: True}
    assert str(await call(client.read_property(at, bo0, "present-value"))) == "active"
    await eventually(lambda: sim.sense(0), message="the bolt follows the output")
    array = await call(client.read_property(at, bo0, "priority-array"))
    assert array[4].enumerated == 1 and array[15].null == ()
    # Relinquish with Null: back to the relinquish default (unlocked).
    assert await call(client.write_property(at, bo0, "present-value", Null(()), priority=5)) is None
    assert sim.priority_array(0) == {} and not sim.locked(0)

    # What a real controller refuses: priority 6 (minimum on/off) and a client's write to a
    # door input's present value.
    reply = await call(client.write_property(at, bo0, "present-value", "active", priority=6))
    assert refusal(reply) == "write-access-denied", reply
    bi0 = ObjectIdentifier("binary-input,0")
    reply = await call(client.write_property(at, bi0, "present-value", "inactive"))
    assert refusal(reply) == "write-access-denied", reply
    assert str(await call(client.read_property(at, bi0, "present-value"))) == "active"


async def test_our_simulator_answers_bacpypes3_rpm_and_cov(
    bacnet_sims: Callable[..., Any], client: Application
) -> None:
    sim = await bacnet_sims(device_instance=2611)
    at = Address(sim.address)
    found = await call(
        client.read_property_multiple(
            at,
            # bacpypes3 takes the list flat: object, its properties, object, ...
            [
                "binary-output,1",
                ["present-value", "relinquish-default"],
                "binary-input,0",
                ["present-value", "status-flags", "out-of-service"],
            ],
        )
    )
    values = {(str(o), str(p)): v for o, p, _, v in found}
    assert str(values[("binary-output,1", "present-value")]) == "inactive"
    assert str(values[("binary-output,1", "relinquish-default")]) == "inactive"
    assert str(values[("binary-input,0", "present-value")]) == "active"
    assert list(values[("binary-input,0", "status-flags")]) == [0, 0, 0, 0]
    assert values[("binary-input,0", "out-of-service")] == 0

    # bacpypes3's own COV client: a door opened at the simulator is notified.
    async with client.change_of_value(at, ObjectIdentifier("binary-input,0"), lifetime=30) as cov:
        sim.set_closed(0, False)
        while True:
            prop, value = await cov.get_value()
            if str(prop) == "present-value" and str(value) == "inactive":
                break


async def test_our_small_simulator_refuses_rpm_to_bacpypes3_as_unrecognized(
    bacnet_sims: Callable[..., Any], client: Application
) -> None:
    sim = await bacnet_sims(device_instance=2611, rpm=False, cov=False)
    at = Address(sim.address)
    device = ObjectIdentifier(f"device,{sim.device_instance}")
    services = await call(client.read_property(at, device, "protocol-services-supported"))
    assert not services[ServicesSupported.readPropertyMultiple]
    assert not services[ServicesSupported.subscribeCOV]
    reply = await call(client.read_property_multiple(at, ["binary-input,0", ["present-value"]]))
    assert refusal(reply) == "unrecognized-service", reply
    assert RPM in {seen.service for seen in sim.request_log}
