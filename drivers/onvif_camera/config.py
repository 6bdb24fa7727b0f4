"""Settings of one ONVIF camera, validated when the campus file loads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from gatewayd.kernel.driver import DriverConfig, ReconnectConfig, ReconnectMaxMs, ReconnectMinMs


class OnvifCameraConfig(ReconnectConfig, DriverConfig):
    """A camera reached through its ONVIF device service."""

    driver: Literal["onvif_camera"]
    #: Host name or IP address of the camera (or of its simulator).
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=80, ge=1, le=65535)
    username: str = Field(min_length=1, max_length=128)
    password: SecretStr
    #: Deadline of one request (the library's own default is 90 s: far too long to notice
    #: a dead camera).
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    #: How long one PullMessages waits on the camera for events (a long poll).
    pull_timeout_s: float = Field(default=5.0, gt=0, le=60)
    #: Termination time asked for a subscription; it is renewed at ~80% of it.
    subscription_s: float = Field(default=60.0, ge=1, le=86_400)
    #: Snapshots go to ``<snapshot_dir>/<device id>/``.
    snapshot_dir: Path = Path("/var/lib/gatewayd/snapshots")
    #: Bound of this camera's snapshot folder; the oldest snapshots are deleted beyond it.
    snapshot_max_mb: float = Field(default=200.0, gt=0, le=1_000_000)
    #: Longest side of a thumbnail, in pixels.
    thumbnail_px: int = Field(default=320, ge=16, le=4096)
    #: How the snapshot URL authenticates (ONVIF cameras mostly use digest).
    snapshot_auth: Literal["digest", "basic"] = "digest"
    #: Media profile token to use; the camera's first profile if unset.
    profile: str | None = None
    #: Preset name -> the camera's preset token; names not listed are looked up on the camera.
    ptz_presets: dict[str, str] = Field(default_factory=dict)
    #: A camera takes seconds to boot and to build a session: retry less eagerly than a board.
    reconnect_min_ms: ReconnectMinMs = 500
    #: Also how often a refused password is tried again.
    reconnect_max_ms: ReconnectMaxMs = 30_000

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.pull_timeout_s >= self.subscription_s * 0.8:
            raise ValueError(
                f"pull_timeout_s ({self.pull_timeout_s}) must be shorter than 80% of"
                f" subscription_s ({self.subscription_s}), or the subscription lapses mid-pull"
            )
        return self
