"""The streaming core's input and outputs (ROS-free): ``stage(frame) -> result``."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from geovis_ros.geometry.camera import Intrinsics


@dataclass(frozen=True)
class Frame:
    """One camera image entering the pipeline.

    Attributes:
        stamp_ns: capture time, nanoseconds (the input header stamp).
        image: (H, W, 3) uint8 RGB.
        intrinsics: pinhole intrinsics of ``image``.
        frame_id: camera frame name (OpenCV optical convention).

    """

    stamp_ns: int
    image: NDArray[np.uint8]
    intrinsics: Intrinsics
    frame_id: str = "camera"

    def __post_init__(self) -> None:
        shape = self.image.shape
        if self.image.dtype != np.uint8 or len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"Frame.image must be (H, W, 3) uint8, got {shape} {self.image.dtype}")
        if (shape[1], shape[0]) != (self.intrinsics.width, self.intrinsics.height):
            raise ValueError(
                f"Frame.image is {shape[1]}x{shape[0]} but intrinsics are for "
                f"{self.intrinsics.width}x{self.intrinsics.height}"
            )


class ScaleSource(enum.Enum):
    """Where the metric scale of a result comes from (the value is the text for diagnostics and reports)."""

    NONE = "none"  # relative depth and no metric source: consistent, not metric
    METRIC_NETWORK = "metric_network"  # a metric depth network (per-image errors averaged by the odometry)
    CAMERA_HEIGHT = "camera_height"  # the ground plane seen at the camera's known mounting height
    FUSED_MAP = "fused_map"  # carried by the fused keyframe depth since a metric source was last seen


@dataclass(frozen=True)
class DepthResult:
    """Depth of one frame at the input resolution.

    Attributes:
        depth: (H, W) float32 metres (z) when ``is_metric``, else relative depth (unknown scale,
            and for affine-invariant models ``1 / (a / depth + b)``), NaN where invalid.
        std: (H, W) float32 standard deviation of ``depth``, same units.
        intrinsics: intrinsics of ``depth`` (same as the frame's).
        is_metric: False for relative-depth models (scale recovered downstream).
        scale_source: where the scale comes from (a network's own output: METRIC_NETWORK or NONE).
        scale_confidence: probability, in [0, 1], that the scale is within the odometry's
            tolerance (``ScaleConfig.confidence_tolerance``) of the true scale; 1.0 for a network's
            own claim.

    """

    depth: NDArray[np.float32]
    std: NDArray[np.float32]
    intrinsics: Intrinsics
    is_metric: bool = True
    scale_source: ScaleSource | None = None
    scale_confidence: float = 1.0

    @property
    def source(self) -> ScaleSource:
        """``scale_source``, or what ``is_metric`` implies when it was not given."""
        if self.scale_source is not None:
            return self.scale_source
        return ScaleSource.METRIC_NETWORK if self.is_metric else ScaleSource.NONE


@dataclass(frozen=True)
class FlowResult:
    """Optical flow from the previous frame to this one, at the input resolution.

    Attributes:
        flow: (H, W, 2) float32 pixels (du, dv), NaN where invalid (e.g. fails
            forward-backward consistency).
        previous_stamp_ns: stamp of the frame the flow starts from.

    """

    flow: NDArray[np.float32]
    previous_stamp_ns: int


class TrackingState(enum.Enum):
    """Odometry state reported every frame."""

    INITIALIZING = "initializing"
    TRACKING = "tracking"
    LOST = "lost"  # this frame failed; covariance inflated, a new keyframe follows
    RELOCALIZED = "relocalized"


@dataclass(frozen=True)
class OdometryResult:
    """Camera pose of one frame.

    Attributes:
        pose: (4, 4) float64 T_odom_camera (OpenCV optical camera frame).
        covariance: (6, 6) float64 over (x, y, z, rx, ry, rz), metres and radians.
        velocity: (6,) float64 twist (v, w) in the camera frame, m/s and rad/s.
        state: tracking state.
        is_metric: True when the scale is metric (see ``scale_source``).
        scale_confidence: in [0, 1]: probability that the scale is within the odometry's
            tolerance (``ScaleConfig.confidence_tolerance``, 5 % by default) of the true scale.
        keyframe_id: id of the keyframe this frame was tracked against.
        residual: robust photometric / reprojection residual of the final estimate.
        inlier_ratio: fraction of pixels / correspondences accepted by the robust weights.
        scale_source: where the metric scale comes from.
        tracker: which tracker gave the pose: "direct", "features" (the fallback or the baseline),
            "motion_model" (lost: constant-velocity bridge) or "" (initialising).

    """

    pose: NDArray[np.float64]
    covariance: NDArray[np.float64]
    velocity: NDArray[np.float64]
    state: TrackingState
    is_metric: bool
    scale_confidence: float
    keyframe_id: int
    residual: float = float("nan")
    inlier_ratio: float = float("nan")
    scale_source: ScaleSource = ScaleSource.NONE
    tracker: str = ""


@dataclass(frozen=True)
class PointCloud:
    """Coloured points: xyz (N, 3) float32 metres in ``frame_id``; rgb (N, 3) uint8."""

    xyz: NDArray[np.float32]
    rgb: NDArray[np.uint8]
    frame_id: str


@dataclass
class PipelineResult:
    """Everything the pipeline produced for one frame (None for stages that are off or not ready).

    ``depth`` is the best depth of the frame: with odometry, the network depth corrected by the
    fused keyframe depth in the odometry's (metric where known) scale; ``network_depth`` is the
    depth network's own output.
    """

    frame: Frame
    depth: DepthResult | None = None
    network_depth: DepthResult | None = None
    flow: FlowResult | None = None
    odometry: OdometryResult | None = None
    points: PointCloud | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
