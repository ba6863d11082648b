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
class GroundConfig:
    """Ground-plane search in the lower image (:mod:`geovis_ros.slam.frontend.ground`).

    Attributes:
        min_row_fraction: the region starts this fraction of the image height from the top.
        column_fraction: central fraction of the image width used.
        stride: pixel stride of the sampled depth.
        max_depth_ratio: points farther than this times the region's median depth are not used
            (far ground is where monocular depth is worst).
        max_tilt_deg: largest angle between the plane normal and the camera's +y (down) axis.
        inlier_band: a point is an inlier when its distance to the plane is at most this fraction
            of the plane's height.
        ransac_iterations: random 3-point hypotheses.
        min_points: fewest points (and inliers) for a plane.
        min_inlier_ratio: a plane supported by a smaller fraction of the region is refused.

    """

    min_row_fraction: float = 0.6
    column_fraction: float = 0.6
    stride: int = 4
    max_depth_ratio: float = 2.0
    max_tilt_deg: float = 25.0
    inlier_band: float = 0.05
    ransac_iterations: int = 500
    min_points: int = 20
    min_inlier_ratio: float = 0.3

    def __post_init__(self) -> None:
        _check_positive(self, "column_fraction", "stride", "max_depth_ratio", "max_tilt_deg", "inlier_band",
                        "ransac_iterations", "min_points")
        _check_fraction(self, "min_row_fraction", "column_fraction", "min_inlier_ratio")


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
            (affine-invariant models such as MiDaS and Depth Anything, whose output is
            ``a / depth + b``); off, only a scale.
        camera_height: the camera's height above the ground, metres (0: unknown). When set, the
            ground plane found in each tracked keyframe's fused depth
            (:mod:`geovis_ros.slam.frontend.ground`) sets the metric scale, whatever the network.
        ground_window_frames: effective memory (frames) of the camera-height scale average.
        ground_gate: once three ground planes were accepted, a plane whose height differs from
            the camera height by more than this in log (0.4: -33 % / +49 %) is ignored.
        ground: where and how the ground plane is searched.

    """

    window_frames: int = 20
    min_points: int = 30
    confidence_tolerance: float = 0.05
    relative_fit_std: float = 0.02
    relative_shift: bool = True
    camera_height: float = 0.0
    ground_window_frames: int = 5
    ground_gate: float = 0.4
    ground: GroundConfig = field(default_factory=GroundConfig)

    def __post_init__(self) -> None:
        _check_positive(self, "window_frames", "min_points", "confidence_tolerance", "relative_fit_std",
                        "ground_window_frames", "ground_gate")
        if not self.camera_height >= 0:
            raise ValueError(f"ScaleConfig.camera_height must be >= 0 metres (0: off), got {self.camera_height}")


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
        two_view: pose from two-view geometry where the parallax allows (see ``min_parallax_px``),
            else PnP on the keyframe depth only. On when a camera height is set
            (:func:`vehicle_features`).
        min_parallax_px: with ``two_view`` and a median corner motion from the keyframe of at
            least this, the pose comes from the essential matrix (depth only sets the translation
            length) and the inliers are triangulated for the ground plane; below it (too little
            parallax for two-view geometry), from PnP on the keyframe depth.
        length_measurement_weight: two-view translation length: weight (log domain) of the
            length measured from the keyframe depth against the motion model's prediction.

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
    two_view: bool = False
    min_parallax_px: float = 3.0
    length_measurement_weight: float = 0.2

    def __post_init__(self) -> None:
        _check_positive(
            self, "max_corners", "corner_quality", "min_corner_distance_px", "lk_window_px", "lk_levels",
            "max_forward_backward_px", "ransac_reprojection_px", "ransac_iterations", "min_inliers",
            "min_parallax_px",
        )
        _check_fraction(self, "min_inlier_ratio", "length_measurement_weight")


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
        feature_fallback: with the direct method, a frame the direct alignment fails on is tracked
            by the feature tracker (KLT + PnP-RANSAC from the predicted motion), then refined by
            the direct alignment from there where it converges; lost only when both fail.
        feature_guess: with the direct method, the feature tracker gives every frame's initial
            guess (then refined by the direct alignment), not only a failed frame's; always on
            when ``scale.camera_height`` is set (vehicles: large motion between frames, where the
            direct alignment from a constant-velocity guess can converge to a wrong minimum).
        refinement_tolerance: a direct refinement of a feature-tracked pose is kept only when its
            translation moved by at most this fraction of the translation (and its rotation by at
            most a tenth of this, radians): a distorted network depth must not pull a two-view
            pose away.
        covariance_inflation: factor on the trackers' covariance (inverse Gauss-Newton Hessian
            times the residual variance), which treats pixels as independent and so is
            overconfident. With the drift terms below and the scale's own uncertainty (see
            ``OdometryStage``), ``geovis vo-bench`` (300 frames, 320x240, simulated network depth)
            gives a mean position NEES of 2.2 / 1.1 / 1.9 (room/handheld, street/driving,
            room/loop; 3 degrees of freedom); ``geovis odometry`` on the real KITTI drive with
            ``--camera-height 1.65`` gives 2.9.
        drift_translation_fraction: drift model: standard deviation of each frame's translation
            error, as a fraction of the frame's translation (unmodelled depth and scale errors).
        drift_rotation_fraction: standard deviation of each frame's rotation error as a fraction
            of its rotation.
        drift_depth_fraction: standard deviation of each frame's translation error as a fraction
            of the keyframe's median depth times the median relative std of its network depth
            (per-image depth errors move even a slow camera; a poorer depth source moves it more).
        min_translation_std: per-frame translation standard deviation floor, metres (also the
            first frame's, so the covariance is never zero).
        min_rotation_std_deg: per-frame rotation standard deviation floor, degrees.
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
    feature_fallback: bool = True
    feature_guess: bool = False
    refinement_tolerance: float = 0.1
    covariance_inflation: float = 10.0
    drift_translation_fraction: float = 0.03
    drift_rotation_fraction: float = 0.05
    drift_depth_fraction: float = 0.02
    min_translation_std: float = 1e-3
    min_rotation_std_deg: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ODOMETRY_METHODS:
            raise ValueError(f"OdometryConfig.method must be one of {ODOMETRY_METHODS}, got {self.method!r}")
        _check_positive(self, "lost_translation_std", "lost_rotation_std_deg", "covariance_inflation",
                        "min_translation_std", "min_rotation_std_deg")
        if min(self.drift_translation_fraction, self.drift_rotation_fraction, self.drift_depth_fraction) < 0:
            raise ValueError("OdometryConfig.drift_translation_fraction, drift_rotation_fraction and "
                             "drift_depth_fraction must be >= 0")
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


def vehicle_features(features: FeatureConfig) -> FeatureConfig:
    """The feature tracker's settings when a camera height is set (a vehicle: large motion, the road below).

    Two-view geometry (the network depth only sets the translation length, which the ground
    plane then corrects) and more, weaker corners, so that enough of them lie on the road to
    triangulate the ground plane: on real driving (KITTI, 51 frames) 400 corners left the ground
    undetected in most frames.
    """
    return replace(features, two_view=True, max_corners=max(features.max_corners, 1500),
                   corner_quality=min(features.corner_quality, 0.003),
                   min_corner_distance_px=min(features.min_corner_distance_px, 5.0))


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
