"""The project's own exception tree; library errors are translated at the driver edge."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every stable error code a reply, an event or a log line can carry (docs/mqtt-api.md).

    Integrators match on these strings: add codes, never rename one.
    """

    INTERNAL = "internal"
    # The command envelope and its parameters.
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    BAD_SCOPE = "bad_scope"
    UNKNOWN_SCOPE = "unknown_scope"
    UNKNOWN_DOOR = "unknown_door"
    OUT_OF_BOUNDS = "out_of_bounds"
    # Who sent it.
    UNSIGNED = "unsigned"
    UNKNOWN_ACTOR = "unknown_actor"
    BAD_SIGNATURE = "bad_signature"
    WRONG_SITE = "wrong_site"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    FORBIDDEN = "forbidden"
    COSIGN_REQUIRED = "cosign_required"
    NO_KEY = "no_key"
    BAD_KEY = "bad_key"
    # What the campus is doing.
    ILLEGAL_TRANSITION = "illegal_transition"
    NOT_ACTIVE = "not_active"
    HELD = "held"
    #: A change that waited for its record found its sources changed meanwhile.
    OVERTAKEN = "overtaken"
    INCIDENT_ACTIVE = "incident_active"
    UNCONFIRMED = "unconfirmed"
    # Bookkeeping.
    STORE_FAILED = "store_failed"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    # Configuration and drivers.
    BAD_CONFIG = "bad_config"
    BAD_TLS = "bad_tls"
    DRIVER_NOT_FOUND = "driver_not_found"
    BAD_POINT = "bad_point"
    # Devices.
    DEVICE_ERROR = "device_error"
    DEVICE_OFFLINE = "device_offline"
    DEVICE_TIMEOUT = "device_timeout"
    BAD_DEVICE_REPLY = "bad_device_reply"
    NOT_SUPPORTED = "not_supported"
    DEVICE_REFUSED = "device_refused"
    DEVICE_AUTH_REFUSED = "device_auth_refused"
    DEVICE_FAULT = "device_fault"
    RADIO_REFUSED = "radio_refused"
    QUEUE_FULL = "queue_full"
    # The broker and the outbox.
    MQTT_ERROR = "mqtt_error"
    BROKER_UNREACHABLE = "broker_unreachable"
    BROKER_ERROR = "broker_error"
    NO_REPLY = "no_reply"
    OUTBOX_ERROR = "outbox_error"
    OUTBOX_CLOSED = "outbox_closed"


class GatewayError(Exception):
    """Base of every error gatewayd raises on purpose."""

    #: Stable, machine-readable code (used in MQTT replies and logs).
    code: str = ErrorCode.INTERNAL


class ConfigError(GatewayError):
    """A configuration file is unreadable or invalid."""

    code: str = ErrorCode.BAD_CONFIG
    #: Problems listed in the message; all of them stay in ``problems``.
    MAX_SHOWN = 30

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        shown = [f"  - {p}" for p in problems[: self.MAX_SHOWN]]
        if len(problems) > self.MAX_SHOWN:
            shown.append(f"  ... and {len(problems) - self.MAX_SHOWN} more")
        joined = "\n".join(shown)
        super().__init__(f"{path}: invalid configuration\n{joined}")


class DriverNotFound(GatewayError):
    """A config names a driver that is not registered or cannot be imported."""

    code: str = ErrorCode.DRIVER_NOT_FOUND


class DeviceError(GatewayError):
    """A device did not do what was asked."""

    code: str = ErrorCode.DEVICE_ERROR


class DeviceOffline(DeviceError):
    """The device is not connected."""

    code: str = ErrorCode.DEVICE_OFFLINE


class DeviceTimeout(DeviceError):
    """The device did not answer within its deadline."""

    code: str = ErrorCode.DEVICE_TIMEOUT


class BadDeviceReply(DeviceError):
    """The device answered with something we cannot trust."""

    code: str = ErrorCode.BAD_DEVICE_REPLY


class UnsupportedCommand(DeviceError):
    """The device has no such function (a snapshot asked of a relay board)."""

    code: str = ErrorCode.NOT_SUPPORTED


class BadPoint(GatewayError):
    """A point address is not valid for a driver."""

    code: str = ErrorCode.BAD_POINT


class CommandError(GatewayError):
    """A command was refused; ``code`` is stable and goes into the reply."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        self.code = str(code)
        super().__init__(message)
