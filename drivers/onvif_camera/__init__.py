"""ONVIF cameras: pull-point events (motion, tamper, digital input), snapshots, PTZ presets."""

from gatewayd.drivers.onvif_camera.config import OnvifCameraConfig
from gatewayd.drivers.onvif_camera.driver import OnvifCameraDriver

__all__ = ["OnvifCameraConfig", "OnvifCameraDriver"]
