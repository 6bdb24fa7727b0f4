"""ONVIF event topics -> the neutral camera topics ``motion``, ``tamper``, ``digital_input``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gatewayd.kernel.events import CameraEvent

#: Topic paths (namespace prefixes removed) and the neutral topic each maps to.
TOPICS: Mapping[str, str] = {
    "VideoSource/MotionAlarm": "motion",
    "RuleEngine/CellMotionDetector/Motion": "motion",
    "RuleEngine/MotionRegionDetector/Motion": "motion",
    "VideoSource/GlobalSceneChange/ImagingService": "tamper",
    "VideoSource/GlobalSceneChange/AnalyticsService": "tamper",
    "RuleEngine/TamperDetector/Tamper": "tamper",
    "VideoSource/ImageTooBlurry/ImagingService": "tamper",
    "VideoSource/ImageTooDark/ImagingService": "tamper",
    "VideoSource/ImageTooBright/ImagingService": "tamper",
    "Device/Trigger/DigitalInput": "digital_input",
}
#: Data items that carry the state, by how cameras name them.
STATE_ITEMS = ("State", "IsMotion", "IsTamper", "LogicalState", "IsInside")
_TRUE = frozenset({"true", "1", "active", "on"})
_FALSE = frozenset({"false", "0", "inactive", "off"})


@dataclass(frozen=True, slots=True)
class Notification:
    """One ONVIF notification message, already out of zeep's objects."""

    topic: str
    source: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict)
    #: ``Initialized`` (state at subscription time), ``Changed`` or ``Deleted``.
    operation: str = ""


class UnreadableEvent(ValueError):
    """A known topic whose message carries no state we understand."""


def topic_path(topic: str) -> str:
    """``tns1:RuleEngine/tnsaxis:X`` -> ``RuleEngine/X`` (prefixes vary by vendor)."""
    return "/".join(part.rpartition(":")[2] for part in topic.strip().split("/"))


def to_camera_event(device: str, note: Notification) -> CameraEvent | None:
    """The neutral event for a notification; None for a topic we do not map."""
    neutral = TOPICS.get(topic_path(note.topic))
    if neutral is None:
        return None
    for name in STATE_ITEMS:
        raw = note.data.get(name)
        if raw is None:
            continue
        value = raw.strip().lower()
        if value in _TRUE or value in _FALSE:
            data = {"onvif_topic": note.topic, "operation": note.operation}
            data.update({f"source.{k}": v for k, v in note.source.items()})
            return CameraEvent(device, neutral, value in _TRUE, data)
        raise UnreadableEvent(f"{note.topic}: {name}={raw!r} is not a boolean")
    raise UnreadableEvent(f"{note.topic}: no state item in {sorted(note.data)}")
