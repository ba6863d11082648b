"""Frozen configuration dataclasses of the streaming pipeline stages (ROS-free).

Every stage receives one of these (never rclpy or argparse objects). Each stage owns its own
dataclass here; a stage's top-level config nests the sub-configs of its parts. Values are checked
in ``__post_init__`` and a bad value raises ``ValueError`` naming the field.

Units: intensities are 8-bit grey levels (0-255), image distances are pixels at the input
resolution, depths are metres (or the network's units for relative-depth models), angles degrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

OdometryMethod = Literal["direct", "features"]
ODOMETRY_METHODS: tuple[str, ...] = ("direct", "features")
# The odometry's per-frame initial guess: constant velocity, or the pose network on the previous and current frame.
MOTION_PRIORS: tuple[str, ...] = ("constant_velocity", "pose_network")
BASELINE_SCALE_WINDOW_FRAMES = 60
"""Metric scale window of the classical baseline (:func:`classical_baseline_config`)."""


def _check_positive(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{type(config).__name__}.{name} must be > 0, got {value}")


def _check_fraction(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{type(config).__name__}.{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class TrackingConfig:
    """Direct photometric frame-to-keyframe alignment (coarse-to-fine Levenberg-Marquardt on SE(3)).

    Attributes:
        pyramid_levels: most pyramid levels used (each halves the image); fewer when the
            coarsest level would be smaller than ``min_level_size`` pixels on its short side.
        min_level_size: smallest short side (pixels) of a pyramid level.
        max_points: most keyframe pixels used at the finest level (level l keeps max_points / 2^l).
        min_gradient: smallest keyframe intensity gradient magnitude (grey levels per pixel, at
            that level) for a pixel to be tracked (semi-dense selection).
        max_iterations: most Levenberg-Marquardt iterations per pyramid level.
        convergence_step: a level stops when the update's norm (metres + radians) falls below this.
        intensity_noise: standard deviation of one pixel's intensity, grey levels; residuals are
            divided by the combined image + depth-uncertainty standard deviation before weighting.
        huber_threshold: Huber threshold on the normalised residual (standard deviations), used
            on the coarse pyramid levels.
        tukey_threshold: Tukey biweight threshold on the normalised residual used on the finest
            level, where the estimate is close enough for a redescending loss to ignore moving
            objects entirely (0: Huber on every level).
        inlier_threshold: a point whose normalised residual is below this counts as an inlier.
        affine_brightness: estimate a gain and offset between keyframe and frame (exposure changes).
        brightness_prior_weight: weight (per point) pulling gain to 1 and offset to 0, so that
            textureless frames cannot explain themselves by a zero gain.
        min_points: fewer usable points than this is a tracking failure.
        min_inlier_ratio: a lower inlier ratio is a tracking failure.
        max_residual: a larger robust RMS intensity residual (grey levels) is a tracking failure.
        max_translation_depth_ratio: a translation from the keyframe larger than this times the
            keyframe's median depth is a divergence.
        max_rotation_deg: a rotation from the keyframe larger than this is a divergence.
        min_image_gradient_fraction: a frame with fewer pixels of gradient >= ``min_gradient``
            than this fraction is refused as textureless (black, saturated, covered lens).
        motion_prior_translation: standard deviation of the motion prior on the translation away
            from the prediction, as a fraction of the keyframe's median depth (0 disables the prior).
        motion_prior_rotation_deg: standard deviation of the motion prior on the rotation away from
            the prediction (0 disables the prior).
        depth_uncertainty_weight: weight of the keyframe depth variance in each residual's
            variance (LSD-SLAM's normalisation at 1), taken relative to each point's inverse depth
            (see ``DirectTracker._depth_sigma_term``). Points whose intensity depends strongly on an
            uncertain depth (gradient along the epipolar line, prior-only network depth) count less,
            so the network's smooth depth errors no longer tilt the rotation: vo-bench --depth
            simulated, seed 0, rotation drift 0.41 / 0.045 / 0.24 deg/m at 0 and 0.21 / 0.016 /
            0.12 deg/m at 1 (room/handheld, street/driving, room/loop). The absolute variance
            (before) biased the scale under forward motion instead.

    """

    pyramid_levels: int = 4
    min_level_size: int = 20
    max_points: int = 2000
    min_gradient: float = 6.0
    max_iterations: int = 12
    convergence_step: float = 1e-4
    intensity_noise: float = 4.0
    huber_threshold: float = 1.5
    tukey_threshold: float = 4.685
    inlier_threshold: float = 3.0
    affine_brightness: bool = True
    brightness_prior_weight: float = 0.05
    min_points: int = 40
    min_inlier_ratio: float = 0.7
    max_residual: float = 15.0
    max_translation_depth_ratio: float = 1.0
    max_rotation_deg: float = 60.0
    min_image_gradient_fraction: float = 0.005
    motion_prior_translation: float = 0.05
    motion_prior_rotation_deg: float = 3.0
    depth_uncertainty_weight: float = 1.0

    def __post_init__(self) -> None:
        _check_positive(
            self, "pyramid_levels", "min_level_size", "max_points", "max_iterations", "convergence_step",
            "intensity_noise", "huber_threshold", "inlier_threshold", "min_points", "max_residual",
            "max_translation_depth_ratio", "max_rotation_deg",
        )
        _check_fraction(self, "min_inlier_ratio", "min_image_gradient_fraction")
        for name in ("min_gradient", "brightness_prior_weight", "motion_prior_translation", "tukey_threshold",
                     "motion_prior_rotation_deg", "depth_uncertainty_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrackingConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class FusionConfig:
    """CNN-SLAM keyframe depth refinement: epipolar small-baseline stereo + Bayesian inverse-depth fusion.

    Attributes:
        enabled: refine the keyframe depth with every tracked frame (False: keep the network depth).
        max_points: most keyframe pixels searched per frame (a different random subset each frame).
        min_gradient: smallest keyframe gradient component along the epipolar line, grey levels/pixel.
        search_radius_px: the match is searched this many pixels either side of the prediction.
        max_match_error: largest RMS intensity difference (grey levels) of the 5-sample match.
        geometric_noise_px: standard deviation (pixels) added to every match for pose/calibration error.
        min_disparity_per_sigma: skip a pixel when its prior's 1-sigma inverse-depth interval spans
            fewer pixels than this along the epipolar line (too little baseline to learn anything).
        outlier_gate: an observation further than this many combined standard deviations from the
            current estimate is rejected.
        bias_field_sigma: the network's spatially smooth (multiplicative) error is estimated from the
            stereo corrections by Gaussian normalised convolution with this sigma, as a fraction of
            the image width, and removed from pixels stereo cannot measure.
        bias_prior_std: prior standard deviation of that smooth log-depth error.
        min_depth: smallest accepted depth (same units as the network depth).
        max_depth: largest accepted depth.

    """

    enabled: bool = True
    max_points: int = 2500
    min_gradient: float = 5.0
    search_radius_px: int = 4
    max_match_error: float = 14.0
    geometric_noise_px: float = 0.35
    min_disparity_per_sigma: float = 0.25
    outlier_gate: float = 3.0
    bias_field_sigma: float = 0.08
    bias_prior_std: float = 0.15
    min_depth: float = 0.05
    max_depth: float = 200.0

    def __post_init__(self) -> None:
        _check_positive(
            self, "max_points", "search_radius_px", "max_match_error", "geometric_noise_px",
            "outlier_gate", "bias_field_sigma", "bias_prior_std", "min_depth", "max_depth",
        )
        if self.min_gradient < 0 or self.min_disparity_per_sigma < 0:
            raise ValueError("FusionConfig.min_gradient and min_disparity_per_sigma must be >= 0")
        if self.max_depth <= self.min_depth:
            raise ValueError(f"FusionConfig.max_depth ({self.max_depth}) must exceed min_depth ({self.min_depth})")


@dataclass(frozen=True)
class KeyframeConfig:
    """When to start a new keyframe, and what a frame needs to become one.

    Attributes:
        max_baseline_ratio: new keyframe when the distance to the keyframe exceeds this fraction of
            the keyframe's median depth.
        min_overlap: new keyframe when fewer than this fraction of the keyframe's tracked pixels
            are visible in the frame.
        max_rotation_deg: new keyframe when the rotation from the keyframe exceeds this.
        min_valid_depth_fraction: a frame whose network depth is valid on fewer pixels than this
            fraction cannot become a keyframe (the switch waits for a better frame).
        propagate_depth: seed a new keyframe with the previous keyframe's fused depth where both
            see the same surface (after a successful track), not only with the network depth.

    """

    max_baseline_ratio: float = 0.12
    min_overlap: float = 0.7
    max_rotation_deg: float = 15.0
    min_valid_depth_fraction: float = 0.2
    propagate_depth: bool = True

    def __post_init__(self) -> None:
        _check_positive(self, "max_baseline_ratio", "max_rotation_deg")
        _check_fraction(self, "min_overlap", "min_valid_depth_fraction")


@dataclass(frozen=True)
class ScaleConfig:
    """Scale of the odometry frame.

    Metric depth: every frame's network depth is compared with the keyframe depth seen from that
    frame and the odometry scale is pulled to the running mean (per-image scale errors of the
    network average out). Relative depth: every new keyframe's network inverse depth is fitted to
    the triangulated/fused depth by a scale and a shift.

    Attributes:
        window_frames: effective memory (frames) of the metric scale average. Short enough to
            follow the odometry's own scale drift (keyframe hand-overs random-walk the scale by
            about 0.5 % each), long enough to average the network's per-image scale error (about
            6 % per frame with vo-bench's simulated depth): 20 gave the lowest RPE of 20 - 120 on
            vo-bench seeds 0 and 1 with the direct method.
        min_points: fewest depth pairs for one scale measurement.
        confidence_tolerance: scale_confidence is the probability that the scale is within this
            relative error (e.g. 0.05 = 5 %) of the reference scale.
        relative_fit_std: standard deviation (log scale) added per keyframe to the scale of a
            relative-depth model (its scale random-walks from keyframe to keyframe).
        relative_shift: for relative-depth models, fit an inverse-depth shift as well as a scale
            (affine-invariant models such as MiDaS); off, only a scale (steadier: on room/handheld
            with simulated network errors the Sim(3) ATE was 0.5 % with scale only, 1.9 % with shift).

    """

    window_frames: int = 20
    min_points: int = 30
    confidence_tolerance: float = 0.05
    relative_fit_std: float = 0.02
    relative_shift: bool = False

    def __post_init__(self) -> None:
        _check_positive(self, "window_frames", "min_points", "confidence_tolerance", "relative_fit_std")


@dataclass(frozen=True)
class FeatureConfig:
    """Classical baseline: KLT corners (or the given optical flow) + PnP-RANSAC on the keyframe depth.

    Attributes:
        max_corners: corners detected per keyframe (Shi-Tomasi).
        corner_quality: Shi-Tomasi quality level relative to the best corner.
        min_corner_distance_px: smallest distance between corners.
        lk_window_px: Lucas-Kanade window side.
        lk_levels: Lucas-Kanade pyramid levels.
        max_forward_backward_px: largest forward-backward KLT disagreement kept.
        use_flow: follow the corners with the given FlowResult instead of KLT when one is passed.
        ransac_reprojection_px: RANSAC inlier threshold.
        ransac_iterations: RANSAC iterations.
        min_inliers: fewer PnP inliers is a tracking failure.
        min_inlier_ratio: a lower inlier fraction is a tracking failure.

    """

    max_corners: int = 400
    corner_quality: float = 0.01
    min_corner_distance_px: float = 7.0
    lk_window_px: int = 21
    lk_levels: int = 3
    max_forward_backward_px: float = 1.0
    use_flow: bool = True
    ransac_reprojection_px: float = 2.0
    ransac_iterations: int = 100
    min_inliers: int = 15
    min_inlier_ratio: float = 0.3

    def __post_init__(self) -> None:
        _check_positive(
            self, "max_corners", "corner_quality", "min_corner_distance_px", "lk_window_px", "lk_levels",
            "max_forward_backward_px", "ransac_reprojection_px", "ransac_iterations", "min_inliers",
        )
        _check_fraction(self, "min_inlier_ratio")


@dataclass(frozen=True)
class OdometryConfig:
    """The monocular odometry stage (:class:`geovis_ros.slam.frontend.odometry.OdometryStage`).

    Attributes:
        method: "direct" (photometric alignment on the fused keyframe depth) or "features"
            (classical baseline: KLT + PnP-RANSAC).
        tracking, fusion, keyframes, scale, features: the parts' configs.
        lost_translation_std: standard deviation (metres) added to the pose covariance's
            translation when a frame is lost.
        lost_rotation_std_deg: standard deviation (degrees) added to its rotation when a frame is lost.
        seed: seed of the random pixel subsets (results are reproducible).

    """

    method: OdometryMethod = "direct"
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    lost_translation_std: float = 0.5
    lost_rotation_std_deg: float = 30.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ODOMETRY_METHODS:
            raise ValueError(f"OdometryConfig.method must be one of {ODOMETRY_METHODS}, got {self.method!r}")
        _check_positive(self, "lost_translation_std", "lost_rotation_std_deg")
        expected = {
            "tracking": TrackingConfig, "fusion": FusionConfig, "keyframes": KeyframeConfig,
            "scale": ScaleConfig, "features": FeatureConfig,
        }
        for item in fields(self):
            if item.name in expected and not isinstance(getattr(self, item.name), expected[item.name]):
                raise ValueError(
                    f"OdometryConfig.{item.name} must be a {expected[item.name].__name__}, "
                    f"got {type(getattr(self, item.name)).__name__}"
                )


def classical_baseline_config() -> OdometryConfig:
    """The classical peer of the direct method: KLT + PnP-RANSAC on the keyframe depth, keyframe fusion off.

    The one definition used by ``geovis odometry --method features`` and by ``geovis vo-bench``,
    so that the classical baseline is the same everywhere.
    """
    default = OdometryConfig()
    # The baseline keeps the 60-frame scale window it was measured with (the direct method's 20 did
    # not help it consistently: vo-bench seed 0 room/handheld ATE 0.071 -> 0.084 m).
    return replace(default, method="features", fusion=replace(default.fusion, enabled=False),
                   scale=replace(default.scale, window_frames=BASELINE_SCALE_WINDOW_FRAMES))


def odometry_config_for(method: OdometryMethod) -> OdometryConfig:
    """The default odometry config of a method (what ``geovis odometry --method`` runs).

    :class:`OdometryConfig` for "direct", :func:`classical_baseline_config` for "features";
    ValueError for any other name.
    """
    if method == "features":
        return classical_baseline_config()
    return OdometryConfig(method=method)
