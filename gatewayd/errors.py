"""The project's own exception tree; library errors are translated at the driver edge."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error gatewayd raises on purpose."""

    #: Stable, machine-readable code (used in MQTT replies and logs).
    code: str = "internal"


class ConfigError(GatewayError):
    """A configuration file is unreadable or invalid."""

    code = "bad_config"
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

    code = "driver_not_found"


class DeviceError(GatewayError):
    """A device did not do what was asked."""

    code = "device_error"


class DeviceOffline(DeviceError):
    """The device is not connected."""

    code = "device_offline"


class DeviceTimeout(DeviceError):
    """The device did not answer within its deadline."""

    code = "device_timeout"


class BadDeviceReply(DeviceError):
    """The device answered with something we cannot trust."""

    code = "bad_device_reply"


class UnsupportedCommand(DeviceError):
    """The device has no such function (a snapshot asked of a relay board)."""

    code = "unsupported_command"


class BadPoint(GatewayError):
    """A point address is not valid for a driver."""

    code = "bad_point"


class CommandError(GatewayError):
    """A command was refused; ``code`` is stable and goes into the reply."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)
