"""Decode, thumbnail and store snapshots in a bounded folder (blocking: run in a thread)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

THUMB_SUFFIX = ".thumb.jpg"
THUMB_QUALITY = 80


class BadImage(ValueError):
    """The bytes the camera sent are not an image OpenCV can decode."""


@dataclass(frozen=True, slots=True)
class Stored:
    path: Path
    thumbnail: Path
    width: int
    height: int


def decode(jpeg: bytes) -> npt.NDArray[np.uint8]:
    """Decode an image, or raise BadImage."""
    if not jpeg:
        raise BadImage("empty snapshot")
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise BadImage(f"snapshot is not an image ({len(jpeg)} bytes, starts {jpeg[:8]!r})")
    return np.asarray(image, dtype=np.uint8)


def thumbnail(image: npt.NDArray[np.uint8], longest_px: int) -> bytes:
    """A JPEG no larger than ``longest_px`` on its longest side (never enlarged)."""
    height, width = image.shape[:2]
    scale = min(1.0, longest_px / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
    ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    if not ok:
        raise BadImage("cannot encode thumbnail")
    return bytes(encoded.tobytes())


class SnapshotStore:
    """One camera's folder of ``<stamp>.jpg`` + ``<stamp>.thumb.jpg``, oldest deleted first."""

    def __init__(self, directory: Path, max_bytes: int, thumbnail_px: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.thumbnail_px = thumbnail_px
        self._seq = itertools.count()
        #: Snapshots deleted to keep the folder within ``max_bytes``.
        self.deleted = 0

    def store(self, jpeg: bytes) -> Stored:
        """Check, thumbnail and write one snapshot, then prune; raises BadImage or OSError."""
        image = decode(jpeg)
        thumb = thumbnail(image, self.thumbnail_px)
        self.directory.mkdir(parents=True, exist_ok=True)
        # Sortable names: the folder's order is the snapshots' order.
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        stem = f"{stamp}-{next(self._seq) % 1_000_000:06d}"
        path = self.directory / f"{stem}.jpg"
        thumb_path = self.directory / f"{stem}{THUMB_SUFFIX}"
        _write_atomic(path, jpeg)
        _write_atomic(thumb_path, thumb)
        self.prune(keep=stem)
        height, width = image.shape[:2]
        return Stored(path, thumb_path, width, height)

    def prune(self, keep: str = "") -> None:
        """Delete the oldest snapshots (and thumbnails) while the folder is over its bound."""
        groups: dict[str, list[Path]] = {}
        total = 0
        for entry in self.directory.glob("*.jpg"):
            stem = entry.name.removesuffix(THUMB_SUFFIX).removesuffix(".jpg")
            groups.setdefault(stem, []).append(entry)
            total += entry.stat().st_size
        for stem in sorted(groups):
            if total <= self.max_bytes or stem == keep:
                break
            for entry in groups[stem]:
                total -= entry.stat().st_size
                entry.unlink(missing_ok=True)
            self.deleted += 1


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name then rename, so a reader never sees half a JPEG."""
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
