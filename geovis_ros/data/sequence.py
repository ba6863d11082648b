"""The in-memory form every reader yields and every writer takes: one frame with its truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from geovis_ros.geometry.camera import Intrinsics


@dataclass
class SequenceFrame:
    """One camera frame and whatever ground truth the source has (None where it has none).

    Attributes:
        name: file stem used by writers, e.g. ``"000042"`` (unique within a sequence).
        stamp_ns: capture time, nanoseconds (monotonic within a sequence).
        rgb: (H, W, 3) uint8 image, RGB order.
        intrinsics: pinhole intrinsics of ``rgb``.
        depth: (H, W) float32 metric depth (z, metres), NaN where invalid.
        pose: (4, 4) float64 T_world_camera, OpenCV optical camera frame.
        flow: (H, W, 2) float32 forward optical flow to the next frame, pixels (u, v).
        flow_valid: (H, W) bool, True where ``flow`` is exact (visible in both frames).

    """

    name: str
    stamp_ns: int
    rgb: NDArray[np.uint8]
    intrinsics: Intrinsics
    depth: NDArray[np.float32] | None = None
    pose: NDArray[np.float64] | None = None
    flow: NDArray[np.float32] | None = None
    flow_valid: NDArray[np.bool_] | None = None

    @property
    def stamp_s(self) -> float:
        """Capture time in seconds."""
        return self.stamp_ns * 1e-9
