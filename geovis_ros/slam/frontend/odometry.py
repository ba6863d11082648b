"""Monocular odometry stage: frame-to-keyframe tracking, CNN-SLAM keyframe fusion, metric scale.

``OdometryStage(config)(frame, depth, flow=None, pose_prior=None) -> OdometryResult`` once per
frame, in stamp order; ``reset()`` forgets everything. The depth network's output (and optionally
the flow network's and a pose network's) are inputs, so the stage runs without any network.

Per frame:

1. Predict the pose: ``pose_prior`` (T_previous_current, e.g. from a pose network) when given,
   else constant velocity.
2. Track against the active keyframe: direct photometric alignment on its fused depth
   (``method="direct"``) or KLT/flow + PnP-RANSAC on its depth (``method="features"``, the
   classical baseline). A failed first attempt is retried from zero motion; a failed direct
   alignment is recovered by the feature tracker and refined from there (hybrid front end; with
   a camera height the feature tracker, with two-view geometry, guesses every frame). Regions of
   the keyframe whose points keep disagreeing (moving objects) are excluded from tracking, stereo
   and the scale measurement, and stay excluded in the next keyframe.
3. Tracked: update the metric scale (camera height: the ground plane among the triangulated
   points, or in the fused depth, against the known height, through a running filter; else
   metric networks: the odometry scale is pulled to the running
   mean of the per-frame network scales, so per-image scale errors average out), refine the
   keyframe depth with the frame (epipolar stereo + Bayesian fusion), and start a new keyframe
   when the baseline, rotation or overlap says so; the new keyframe's network depth is aligned
   (scale; optionally a shift for relative-depth networks) to the previous keyframe's stereo
   depth propagated into it, which also seeds its fusion.
4. Lost (both trackers failed: textureless frame, too few inliers, divergence): report ``LOST``
   with the constant-velocity pose (the motion model bridges the gap, never a frozen pose) and an
   inflated covariance, and start a new keyframe from this frame's network depth when the frame is
   usable (otherwise keep the old keyframe and retry). The first frame tracked after that is
   ``RELOCALIZED``.
5. On request, :meth:`OdometryStage.frame_depth`: the frame's best depth (CNN-SLAM: the keyframe's
   fused depth warped into the frame and fused with the network depth brought into its scale).

Covariance: the tracker's (inverse Gauss-Newton Hessian, inflated) plus the keyframe's plus a
drift model per frame; never zero (see ``OdometryConfig``). Every result carries ``is_metric``,
the scale source and the scale confidence.

Frames: poses are T_odom_camera (OpenCV optical camera frame), odom = the first keyframe's camera.
Covariances are 6x6 over (x, y, z, rx, ry, rz) of a left perturbation in the odom frame. Velocity
is the camera-frame twist (v, w) in m/s and rad/s. Depth units are metres for metric networks.

Keyframe events (for the map / loop closure): ``add_keyframe_listener(callback)`` receives a
:class:`KeyframeEvent` when a keyframe is created and when it is finalized (replaced: its depth is
final); ``stage.keyframe`` is a snapshot of the active keyframe with its current fused depth.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from geovis_ros.frame import DepthResult, FlowResult, Frame, OdometryResult, ScaleSource, TrackingState
from geovis_ros.geometry.se3 import invert, orthonormalized, se3_adjoint, se3_exp, se3_log
from geovis_ros.slam.frontend.config import OdometryConfig, vehicle_features
from geovis_ros.slam.frontend.estimate import TrackingEstimate, TrackingFailure, failed_estimate
from geovis_ros.slam.frontend.features import FeatureTracker
from geovis_ros.slam.frontend.ground import (
    GroundPlane,
    fit_ground_plane,
    ground_candidates,
    in_ground_region,
    near_points,
)
from geovis_ros.slam.frontend.keyframes import (
    ActiveKeyframe,
    FusionStats,
    Keyframe,
    align_prior_to_reference,
    frame_depth_grid,
    fuse_frame_depth,
    inverse_depth_prior,
    keyframe_switch_reason,
    resample_map,
)
from geovis_ros.slam.frontend.pyramid import ImagePyramid, sample_bilinear
from geovis_ros.slam.frontend.tracking import DirectTracker

_DEFAULT_FRAME_INTERVAL_S = 1.0 / 30.0  # used until two frames with distinct stamps were seen
_UNKNOWN_SCALE_STD = 1.0  # log-scale std after a relative-depth run lost its scale reference
_INITIAL_SCALE_STD = 0.1  # log-scale std of a single network depth map before any averaging


class KeyframeEventKind(enum.Enum):
    """What happened to a keyframe."""

    CREATED = "created"
    FINALIZED = "finalized"  # replaced by a newer keyframe: its fused depth will not change again


@dataclass(frozen=True)
class KeyframeEvent:
    """A keyframe event with a snapshot of the keyframe, at the frame stamp it happened."""

    kind: KeyframeEventKind
    keyframe: Keyframe
    stamp_ns: int


class MetricScaleFilter:
    """Running mean of log(odometry depth / network depth), forgetting exponentially after ``window`` frames.

    Each :meth:`update` returns the factor by which odometry depths (and translations) must be
    multiplied so that the odometry scale equals the mean network scale; the stored observations
    are shifted accordingly, so that per-image scale errors of the network average out.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.count = 0.0
        self.squared_deviation = 0.0

    def start(self) -> None:
        """Count the first keyframe's network depth as one observation (it defines the scale)."""
        self.count = max(self.count, 1.0)

    def update(self, log_ratio: float) -> float:
        """Add one observation; returns the depth factor to apply now (1.0 changes nothing).

        The stored observations always have zero mean in the current (corrected) scale, so the
        new mean is ``log_ratio / count``; that is the correction.
        """
        self.count = min(self.count + 1.0, float(self.window))
        correction = log_ratio / self.count
        self.squared_deviation += log_ratio * (log_ratio - correction)
        if self.count >= self.window:
            self.squared_deviation *= (self.window - 1.0) / self.window
        return math.exp(-correction)

    @property
    def log_std(self) -> float:
        """Standard error of the odometry log scale relative to the mean network scale."""
        if self.count < 2:
            return _INITIAL_SCALE_STD
        per_frame = math.sqrt(max(self.squared_deviation / (self.count - 1.0), 0.0))
        return max(per_frame, 0.005) / math.sqrt(self.count)


def _depth_guess(network_rho: NDArray[np.float32], affine: tuple[float, float]) -> NDArray[np.float32]:
    """(H, W) float32 inverse depth guess in odometry units: ``scale * rho + shift``, holes filled with its median."""
    guess = affine[0] * network_rho + affine[1]
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(guess) & (guess > 0)
    fill = float(np.median(guess[finite])) if np.any(finite) else 1.0
    return np.where(finite, guess, fill).astype(np.float32)


def _poses_agree(pose: NDArray[np.float64], reference: NDArray[np.float64], tolerance: float) -> bool:
    """Whether two (4, 4) poses T_current_keyframe agree within ``tolerance``.

    The translation may differ by at most ``tolerance`` times the reference translation's length,
    the rotation by at most ``0.1 * tolerance`` radians.
    """
    delta = invert(reference) @ pose
    length = float(np.linalg.norm(reference[:3, 3]))
    translation_ok = float(np.linalg.norm(delta[:3, 3])) <= tolerance * max(length, 1e-9)
    rotation_ok = float(np.linalg.norm(se3_log(delta)[3:])) <= 0.1 * tolerance
    return translation_ok and rotation_ok


def _scale_confidence(log_std: float, tolerance: float) -> float:
    """Probability that a log-normal scale error of std ``log_std`` stays within ``tolerance``."""
    return float(math.erf(math.log1p(tolerance) / (max(log_std, 1e-9) * math.sqrt(2.0))))


class OdometryStage:
    """Streaming monocular odometry; see the module docstring."""

    def __init__(
        self, config: OdometryConfig, on_keyframe: Callable[[KeyframeEvent], None] | None = None
    ) -> None:
        if not isinstance(config, OdometryConfig):
            raise TypeError(f"OdometryStage needs an OdometryConfig, got {type(config).__name__}")
        self.config = config
        self._direct = DirectTracker(config.tracking)
        features = vehicle_features(config.features) if config.scale.camera_height > 0 else config.features
        self._features = FeatureTracker(features, config.tracking)
        self._listeners: list[Callable[[KeyframeEvent], None]] = []
        if on_keyframe is not None:
            self._listeners.append(on_keyframe)
        self.reset()

    # --- public API ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all state (keyframes, velocity, scale); the next frame starts a new odometry frame."""
        self._rng = np.random.default_rng(self.config.seed)
        self._active: ActiveKeyframe | None = None
        self._next_keyframe_id = 0
        self._pose = np.eye(4)
        floor = self.config
        self._covariance = np.diag(
            [floor.min_translation_std**2] * 3 + [math.radians(floor.min_rotation_std_deg) ** 2] * 3)
        self._velocity = np.zeros(6)
        self._stamp_ns: int | None = None
        self._frame_interval_s = _DEFAULT_FRAME_INTERVAL_S
        self._brightness = (1.0, 0.0)
        self._recovering = False
        self._metric_scale = MetricScaleFilter(self.config.scale.window_frames)
        self._ground_scale = MetricScaleFilter(self.config.scale.ground_window_frames)
        self._frames_since_ground = 0
        # (scale, shift) taking the network's inverse depth into odometry units, from the last keyframe
        # hand-over (relative-depth networks, and any network once the camera height sets the scale).
        self._prior_affine: tuple[float, float] | None = None
        self._relative_log_std = 0.0
        self._prior_relative_std = 0.0  # median relative depth std of the active keyframe's network prior
        # the scale uncertainty's part of the position covariance (see _scale_position_covariance)
        self._scale_path_covariance = np.zeros((3, 3))
        self._scale_segment = np.zeros(3)
        self._scale_segment_frames = 0
        self._scale_last_position = np.zeros(3)
        self._pose_current_keyframe: NDArray[np.float64] | None = None  # the last frame, T_current_active
        self._features.reset()
        self.last_estimate: TrackingEstimate | None = None
        self.last_fusion = FusionStats()
        self.last_ground: GroundPlane | None = None

    def add_keyframe_listener(self, callback: Callable[[KeyframeEvent], None]) -> None:
        """Call ``callback(event)`` on every keyframe creation and finalization (in the caller's thread)."""
        self._listeners.append(callback)

    @property
    def keyframe(self) -> Keyframe | None:
        """Snapshot (copy) of the active keyframe with its current fused depth; None before the first."""
        return None if self._active is None else self._active.snapshot()

    def __call__(
        self, frame: Frame, depth: DepthResult, flow: FlowResult | None = None,
        pose_prior: NDArray[np.floating] | None = None,
    ) -> OdometryResult:
        """Track one frame.

        Args:
            frame: the camera image.
            depth: the depth network's output for ``frame`` (same size); ``is_metric`` selects the
                scale handling.
            flow: optical flow from the previous frame to this one (used by ``method="features"``).
            pose_prior: (4, 4) T_previous_current motion since the previous frame (e.g. a pose
                network), replacing the constant-velocity guess; ignored when not finite.

        Raises:
            TypeError, ValueError: inputs of the wrong type or shape (bad image content never raises).

        """
        prior = self._check_inputs(frame, depth, flow, pose_prior)
        pyramid = ImagePyramid.build(frame.image, frame.intrinsics, self.config.tracking)
        dt = self._advance_clock(frame.stamp_ns)
        if self._active is None:
            return self._initialize(frame, pyramid, depth)
        predicted = orthonormalized(self._pose @ (prior if prior is not None else se3_exp(self._velocity * dt)))
        guess = invert(predicted) @ self._active.pose
        estimate, tracker = self._track(pyramid, guess, flow)
        self.last_estimate = estimate
        if estimate.success:
            return self._tracked(frame, pyramid, depth, estimate, dt, tracker)
        return self._lost(frame, pyramid, depth, predicted, estimate)

    def frame_depth(self, depth: DepthResult) -> DepthResult:
        """The best depth of the frame just tracked: its network depth corrected by the fused keyframe depth.

        Call right after :meth:`__call__` with the same ``depth``. The active keyframe's fused
        inverse depth and variance are warped into this frame with the tracked pose
        (:meth:`~geovis_ros.slam.frontend.keyframes.ActiveKeyframe.sample_into`), the
        network depth is brought into the odometry's scale (fitted onto the keyframe depth: a
        scale, plus a shift for relative inverse depth) and corrected and fused with it
        (:func:`~geovis_ros.slam.frontend.keyframes.fuse_frame_depth`). Images larger than
        :data:`~geovis_ros.slam.frontend.keyframes.FRAME_DEPTH_MAX_PIXELS` are fused on a coarser
        grid (:func:`~geovis_ros.slam.frontend.keyframes.frame_depth_grid`) and the result is
        resized to the image (bilinear).

        Returns:
            (H, W) float32 depth and std in odometry units (metres when ``is_metric``), NaN
            invalid, with the odometry's scale source and confidence; ``depth`` itself before the
            first keyframe.

        """
        active, relative = self._active, self._pose_current_keyframe
        if active is None or relative is None:
            return depth
        cfg = self.config
        image = depth.intrinsics
        grid = frame_depth_grid(image)  # the image's, or a coarser one for large images
        rho_net, var_net = (resample_map(values, grid) for values in
                            inverse_depth_prior(depth.depth, depth.std, cfg.fusion))
        known = self._prior_affine if self._prior_affine is not None and self._affine_prior_used(depth) else (1.0, 0.0)
        keyframe_rho, keyframe_var = active.sample_into(relative, grid, _depth_guess(rho_net, known))
        fit_shift = cfg.scale.relative_shift and not depth.is_metric
        fit = align_prior_to_reference(rho_net, keyframe_rho, fit_shift=fit_shift, min_points=cfg.scale.min_points)
        affine = (fit[0], fit[1]) if fit is not None else known
        rho, var = (resample_map(values, image) for values in
                    fuse_frame_depth(rho_net, var_net, keyframe_rho, keyframe_var, affine, cfg.fusion))
        is_metric, source, confidence = self._scale_state(depth)
        with np.errstate(divide="ignore", invalid="ignore"):
            metres = (1.0 / rho).astype(np.float32)
            std = (np.sqrt(var) / (rho * rho)).astype(np.float32)
        return DepthResult(metres, std, depth.intrinsics, is_metric=is_metric, scale_source=source,
                           scale_confidence=confidence)

    # --- steps --------------------------------------------------------------------------------

    def _check_inputs(
        self, frame: Frame, depth: DepthResult, flow: FlowResult | None, pose_prior: NDArray[np.floating] | None
    ) -> NDArray[np.float64] | None:
        if not isinstance(frame, Frame):
            raise TypeError(f"frame must be a Frame, got {type(frame).__name__}")
        if not isinstance(depth, DepthResult):
            raise TypeError(f"depth must be a DepthResult, got {type(depth).__name__}")
        size = (frame.intrinsics.height, frame.intrinsics.width)
        if depth.depth.shape != size or depth.std.shape != size:
            raise ValueError(
                f"depth is {depth.depth.shape} (std {depth.std.shape}) but the frame is {size[1]}x{size[0]}; "
                "resize the depth to the image first"
            )
        if flow is not None:
            if not isinstance(flow, FlowResult):
                raise TypeError(f"flow must be a FlowResult or None, got {type(flow).__name__}")
            if flow.flow.shape != (*size, 2):
                raise ValueError(f"flow is {flow.flow.shape}, expected {(*size, 2)} for this frame")
        if pose_prior is None:
            return None
        prior = np.asarray(pose_prior, dtype=np.float64)
        if prior.shape != (4, 4):
            raise ValueError(f"pose_prior must be a 4x4 pose, got shape {prior.shape}")
        return prior if np.all(np.isfinite(prior)) else None

    def _advance_clock(self, stamp_ns: int) -> float:
        """Seconds since the previous frame (the last good interval when stamps do not advance)."""
        if self._stamp_ns is not None and stamp_ns > self._stamp_ns:
            self._frame_interval_s = (stamp_ns - self._stamp_ns) * 1e-9
        self._stamp_ns = stamp_ns
        return self._frame_interval_s

    def _track(
        self, pyramid: ImagePyramid, guess: NDArray[np.float64], flow: FlowResult | None
    ) -> tuple[TrackingEstimate, str]:
        """Track the frame against the active keyframe; returns the estimate and the tracker that made it.

        Direct method: when the alignment fails (large motion, low texture, fast rotation) the
        feature tracker (KLT from the keyframe with the predicted motion + two-view geometry or
        PnP-RANSAC) recovers the pose, and the direct alignment is run again from there, kept where
        it converges. With ``feature_guess`` (or a camera height: vehicles, large motion per frame)
        the feature tracker gives every frame's initial guess.
        """
        active = self._active
        assert active is not None
        method = self.config.method
        if method == "direct" and (self.config.feature_guess or self._ground_on):
            first = self._features.track(active, pyramid, guess, None)
            if first.success:
                refined = self._direct.track(active.reference, pyramid, first.pose_current_keyframe, self._brightness,
                                             active.median_depth())
                agree = refined.success and _poses_agree(refined.pose_current_keyframe, first.pose_current_keyframe,
                                                         self.config.refinement_tolerance)
                if not agree:
                    return first, "features"
                # the two-view points stay available for the ground plane
                return replace(refined, triangulated=first.triangulated,
                               triangulated_pixels=first.triangulated_pixels), "direct"
        attempts = [guess]
        previous = invert(self._pose) @ active.pose  # zero motion since the previous frame
        if not np.allclose(previous, guess, atol=1e-9):
            attempts.append(previous)
        estimate = failed_estimate(guess, TrackingFailure.NOT_TRACKED)
        for attempt in attempts:
            if self.config.method == "direct":
                estimate = self._direct.track(active.reference, pyramid, attempt, self._brightness,
                                              active.median_depth())
            else:
                estimate = self._features.track(active, pyramid, attempt, flow)
            if estimate.success or estimate.failure is TrackingFailure.TEXTURELESS:
                break
        if estimate.success or method == "features" or not self.config.feature_fallback or (
                estimate.failure is TrackingFailure.TEXTURELESS):
            return estimate, method
        recovered = self._features.track(active, pyramid, guess, None)
        if not recovered.success:
            return estimate, method
        refined = self._direct.track(active.reference, pyramid, recovered.pose_current_keyframe, (1.0, 0.0),
                                     active.median_depth())
        return (refined, "direct") if refined.success else (recovered, "features")

    def _tracked(
        self, frame: Frame, pyramid: ImagePyramid, depth: DepthResult, estimate: TrackingEstimate, dt: float,
        tracker: str,
    ) -> OdometryResult:
        active = self._active
        assert active is not None
        pose_current_keyframe = estimate.pose_current_keyframe
        self._brightness = estimate.brightness
        fusing = self.config.fusion.enabled
        factor = self._scale_update(active, pose_current_keyframe, depth)
        if factor != 1.0:
            active.rescale(factor, refresh=not fusing)  # fuse() below rebuilds the reference
            if self._prior_affine is not None and self._ground_on:  # later network priors enter rescaled too
                self._prior_affine = (self._prior_affine[0] / factor, self._prior_affine[1] / factor)
            pose_current_keyframe = pose_current_keyframe.copy()
            pose_current_keyframe[:3, 3] *= factor
            self._velocity[:3] *= factor
        if fusing:
            self.last_fusion = active.fuse(pyramid, pose_current_keyframe, estimate.brightness)
        pose_keyframe_current = invert(pose_current_keyframe)
        pose = orthonormalized(active.pose @ pose_keyframe_current)
        adjoint = se3_adjoint(active.pose)
        step = invert(self._pose) @ pose
        covariance = (adjoint @ (self.config.covariance_inflation * estimate.covariance) @ adjoint.T
                      + active.covariance + self._drift_covariance(step, pose, active.median_depth()))
        self._velocity = se3_log(step) / dt
        self._pose, self._covariance = pose, covariance
        self._pose_current_keyframe = pose_current_keyframe
        state = TrackingState.RELOCALIZED if self._recovering else TrackingState.TRACKING
        self._recovering = False
        reason = keyframe_switch_reason(pose_current_keyframe, active.median_depth(), estimate.visible_ratio,
                                        self.config.keyframes)
        if reason:
            self._switch_keyframe(frame, pyramid, depth, pose_current_keyframe, estimate)
        return self._result(state, estimate, keyframe_id=active.id, depth=depth, tracker=tracker)

    def _drift_covariance(
        self, step: NDArray[np.float64], pose: NDArray[np.float64], scene_depth: float
    ) -> NDArray[np.float64]:
        """Covariance (6, 6), odom frame, that one frame adds beyond the tracker's own: the drift model.

        Independent per axis: translation std ``drift_translation_fraction`` times the frame's
        translation plus ``drift_depth_fraction`` times the scene depth (odometry units) times the
        relative depth std the network reported for the keyframe (its per-image depth errors move
        even a slow camera, and a poorer depth source moves it more) plus a floor, rotation std
        ``drift_rotation_fraction`` times its rotation (plus a floor); expressed at ``pose``
        (T_odom_current).
        """
        cfg = self.config
        translation = float(np.linalg.norm(step[:3, 3]))
        rotation = float(np.linalg.norm(se3_log(step)[3:]))
        depth_term = (cfg.drift_depth_fraction * self._prior_relative_std * scene_depth
                      if math.isfinite(scene_depth) else 0.0)
        t_std = cfg.drift_translation_fraction * translation + depth_term + cfg.min_translation_std
        r_std = cfg.drift_rotation_fraction * rotation + math.radians(cfg.min_rotation_std_deg)
        local = np.diag([t_std**2] * 3 + [r_std**2] * 3)
        adjoint = se3_adjoint(pose)
        return np.asarray(adjoint @ local @ adjoint.T, dtype=np.float64)

    def _lost(
        self, frame: Frame, pyramid: ImagePyramid, depth: DepthResult, predicted: NDArray[np.float64],
        estimate: TrackingEstimate,
    ) -> OdometryResult:
        active = self._active
        assert active is not None
        cfg = self.config
        inflation = np.diag([cfg.lost_translation_std**2] * 3 + [math.radians(cfg.lost_rotation_std_deg) ** 2] * 3)
        self._pose, self._covariance = predicted, self._covariance + inflation
        self._pose_current_keyframe = invert(predicted) @ active.pose
        self._recovering = True
        if not depth.is_metric:
            self._relative_log_std = _UNKNOWN_SCALE_STD
        tracked_keyframe = active.id
        prior = self._network_prior(depth)
        if pyramid.texture_fraction >= cfg.tracking.min_image_gradient_fraction and prior is not None:
            pose_parent = invert(active.pose) @ predicted
            self._start_keyframe(frame, pyramid, depth, prior, predicted, self._covariance, parent=active,
                                 pose_parent_keyframe=pose_parent, relative_covariance=inflation, after_loss=True)
            self._pose_current_keyframe = np.eye(4)
        return self._result(TrackingState.LOST, estimate, keyframe_id=tracked_keyframe, depth=depth,
                            tracker="motion_model")

    def _initialize(self, frame: Frame, pyramid: ImagePyramid, depth: DepthResult) -> OdometryResult:
        prior = self._network_prior(depth)
        estimate = failed_estimate(np.eye(4), TrackingFailure.INITIALIZING)
        if pyramid.texture_fraction >= self.config.tracking.min_image_gradient_fraction and prior is not None:
            self._start_keyframe(frame, pyramid, depth, prior, self._pose, self._covariance, parent=None)
            if depth.is_metric:
                self._metric_scale.start()
            if self._ground_on:
                self._prior_affine = (1.0, 0.0)
            assert self._active is not None
            self._pose_current_keyframe = np.eye(4)
            return self._result(TrackingState.INITIALIZING, estimate, keyframe_id=self._active.id, depth=depth)
        return self._result(TrackingState.INITIALIZING, estimate, keyframe_id=-1, depth=depth)

    # --- keyframes ----------------------------------------------------------------------------

    def _network_prior(self, depth: DepthResult) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
        """Inverse depth + variance of the network depth, or None when too little of it is valid."""
        rho, var = inverse_depth_prior(depth.depth, depth.std, self.config.fusion)
        valid_fraction = float(np.count_nonzero(np.isfinite(rho))) / rho.size
        if valid_fraction < self.config.keyframes.min_valid_depth_fraction:
            return None
        return rho, var

    def _switch_keyframe(
        self, frame: Frame, pyramid: ImagePyramid, depth: DepthResult, pose_current_keyframe: NDArray[np.float64],
        estimate: TrackingEstimate,
    ) -> None:
        active = self._active
        assert active is not None
        prior = self._network_prior(depth)
        if prior is None:
            return  # this frame's depth is unusable: keep tracking the old keyframe
        propagated = None
        fit = None
        if self.config.keyframes.propagate_depth:
            propagated = active.propagate(pose_current_keyframe, frame.intrinsics)
            fit_shift = self.config.scale.relative_shift and not depth.is_metric
            # With a camera height the ground filter owns the scale: the new prior enters through the
            # affine map it maintains (the stereo depth still seeds the keyframe as evidence).
            fit = None if self._ground_on else align_prior_to_reference(
                prior[0], self._handover_reference(active, pose_current_keyframe, frame, depth, prior[0],
                                                   propagated[0]),
                fit_shift=fit_shift, min_points=self.config.scale.min_points)
            if fit is not None:
                scale, shift, _ = fit
                prior = (scale * prior[0] + shift, prior[1] * scale**2)
                if self._affine_prior_used(depth):
                    self._prior_affine = (scale, shift)
                if not depth.is_metric:
                    self._relative_log_std = math.hypot(self._relative_log_std, self.config.scale.relative_fit_std)
        self._start_keyframe(frame, pyramid, depth, prior, self._pose, self._covariance, parent=active,
                             pose_parent_keyframe=invert(pose_current_keyframe),
                             relative_covariance=estimate.covariance, after_loss=False, scale_prior=fit is None,
                             evidence=propagated)
        if self._active is not None and estimate.persistent_outlier.size:
            # Moving objects stay excluded across the hand-over (seen where they are in this frame).
            reference = self._active.reference
            reference.update_outlier_cells(reference.cells_of(*estimate.projected.T), estimate.persistent_outlier)

    def _handover_reference(
        self, active: ActiveKeyframe, pose_current_keyframe: NDArray[np.float64], frame: Frame, depth: DepthResult,
        prior_rho: NDArray[np.float32], stereo_rho: NDArray[np.float32],
    ) -> NDArray[np.float32]:
        """(H, W) float32 inverse depth (odometry units) the new keyframe's network prior is fitted to at a hand-over.

        The stereo depth propagated from the old keyframe, completed with the old keyframe's whole
        fused depth warped into the new one: the scale (and shift) is fitted on every pixel the two
        share, so it random-walks far less from keyframe to keyframe (7-Scenes 0-299: published
        depth AbsRel 0.219 -> 0.209 on the first 150 frames with the shipped network; with
        simulated relative depth, one-scale AbsRel 0.114 -> 0.097). Without fusion (the classical
        baseline) only the stereo depth, i.e. nothing: the baseline stays as it was measured.
        """
        if not self.config.fusion.enabled:
            return stereo_rho
        affine = self._prior_affine if self._prior_affine is not None and self._affine_prior_used(depth) else (
            1.0, 0.0)
        whole, _ = active.sample_into(pose_current_keyframe, frame.intrinsics, _depth_guess(prior_rho, affine))
        return np.where(np.isfinite(stereo_rho), stereo_rho, whole).astype(np.float32)

    def _start_keyframe(
        self, frame: Frame, pyramid: ImagePyramid, depth: DepthResult,
        prior: tuple[NDArray[np.float32], NDArray[np.float32]], pose: NDArray[np.float64],
        covariance: NDArray[np.float64], parent: ActiveKeyframe | None,
        pose_parent_keyframe: NDArray[np.float64] | None = None,
        relative_covariance: NDArray[np.float64] | None = None, after_loss: bool = False, scale_prior: bool = True,
        evidence: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
    ) -> None:
        """Make ``frame`` the active keyframe (finalizing the old one) from the network prior.

        ``scale_prior``: bring a relative-depth prior (any prior once the camera height sets the
        scale) into the odometry scale with the last fitted affine map (for keyframes whose depth
        could not be aligned to a predecessor).
        ``evidence``: inverse depth + variance maps propagated from the previous keyframe.
        """
        rho, var = prior
        if scale_prior and self._affine_prior_used(depth) and self._prior_affine is not None:
            scale, shift = self._prior_affine
            rho, var = scale * rho + shift, var * scale**2
        with np.errstate(invalid="ignore"):
            rho = np.where(rho > 1.0 / self.config.fusion.max_depth, rho, np.nan).astype(np.float32)
            relative_std = np.sqrt(var[::4, ::4]) / rho[::4, ::4]
        relative_std = relative_std[np.isfinite(relative_std)]
        self._prior_relative_std = float(np.median(relative_std)) if relative_std.size else 0.0
        keyframe = ActiveKeyframe(
            self._next_keyframe_id, frame.stamp_ns, frame.image, pyramid, rho, var.astype(np.float32), pose,
            covariance, depth.is_metric, self.config.tracking, self.config.fusion, self._rng,
            parent_id=None if parent is None else parent.id, pose_parent_keyframe=pose_parent_keyframe,
            relative_covariance=relative_covariance, after_loss=after_loss,
        )
        if evidence is not None:
            keyframe.seed_evidence(*evidence)
        self._next_keyframe_id += 1
        self._brightness = (1.0, 0.0)
        if parent is not None:
            self._emit(KeyframeEventKind.FINALIZED, parent, frame.stamp_ns)
        self._active = keyframe
        self._emit(KeyframeEventKind.CREATED, keyframe, frame.stamp_ns)

    def _emit(self, kind: KeyframeEventKind, keyframe: ActiveKeyframe, stamp_ns: int) -> None:
        if not self._listeners:
            return
        event = KeyframeEvent(kind, keyframe.snapshot(), stamp_ns)
        for listener in self._listeners:
            listener(event)

    # --- scale --------------------------------------------------------------------------------

    @property
    def _ground_on(self) -> bool:
        return self.config.scale.camera_height > 0

    def _affine_prior_used(self, depth: DepthResult) -> bool:
        """Whether network depth needs the fitted affine map to enter the odometry scale."""
        return not depth.is_metric or self._ground_on

    def _scale_update(
        self, active: ActiveKeyframe, pose_current_keyframe: NDArray[np.float64], depth: DepthResult
    ) -> float:
        """One scale measurement after a tracked frame; returns the depth factor to apply (1.0: none).

        With a camera height: the ground plane among the points the feature tracker triangulated
        from the keyframe and this frame (two-view geometry, independent of the network's depth
        errors), else in the active keyframe's fused depth; its height is compared with the camera
        height. Otherwise, with a metric network: the network depth of the keyframe's points seen
        now, compared with their odometry depth.
        """
        if self._ground_on:
            self._frames_since_ground += 1
            ground = self.config.scale.ground
            k = active.pyramid.intrinsics[0]
            estimate = self.last_estimate
            if estimate is not None and estimate.triangulated.shape[0] >= ground.min_points:
                region = in_ground_region(estimate.triangulated_pixels, k.width, k.height, ground)
                points = near_points(estimate.triangulated[region], ground)
            else:
                points = ground_candidates(active.inverse_depth, k, ground)
            plane = fit_ground_plane(points, ground, self._rng)
            self.last_ground = plane
            if plane is None:
                return 1.0
            log_ratio = math.log(plane.height / self.config.scale.camera_height)
            settled = self._ground_scale.count >= 3
            if settled and abs(log_ratio) > self.config.scale.ground_gate:
                return 1.0  # another surface taken for the ground, or a bad triangulation
            self._frames_since_ground = 0
            return self._ground_scale.update(log_ratio)
        if not depth.is_metric:
            return 1.0
        observed = self._scale_observation(active, pose_current_keyframe, depth)
        return 1.0 if observed is None else self._metric_scale.update(observed)

    def _scale_observation(
        self, active: ActiveKeyframe, pose_current_keyframe: NDArray[np.float64], depth: DepthResult
    ) -> float | None:
        """Median log(odometry depth / network depth) over the keyframe's tracked points seen now."""
        reference = active.reference
        points = reference.levels[0].points[reference.usable(0)]  # not on moving objects
        if points.shape[0] < self.config.scale.min_points:
            return None
        moved = points @ pose_current_keyframe[:3, :3].T + pose_current_keyframe[:3, 3]
        z = moved[:, 2]
        front = z > 1e-6
        k = active.pyramid.intrinsics[0]
        safe_z = np.where(front, z, 1.0)
        u, v = k.fx * moved[:, 0] / safe_z + k.cx, k.fy * moved[:, 1] / safe_z + k.cy
        network = sample_bilinear(np.asarray(depth.depth, dtype=np.float32), u, v)
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = front & np.isfinite(network) & (network > 0)
            if np.count_nonzero(ok) < self.config.scale.min_points:
                return None
            return float(np.median(np.log(z[ok] / network[ok])))

    def _scale_state(self, depth: DepthResult) -> tuple[bool, ScaleSource, float]:
        """(is_metric, scale source, scale confidence) after this frame (see :meth:`_scale_uncertainty`)."""
        is_metric, source, log_std = self._scale_uncertainty(depth)
        return is_metric, source, _scale_confidence(log_std, self.config.scale.confidence_tolerance)

    def _scale_uncertainty(self, depth: DepthResult) -> tuple[bool, ScaleSource, float]:
        """(is_metric, scale source, standard deviation of the odometry's log scale) after this frame.

        The camera height wins once the ground was seen (FUSED_MAP when it has not been seen for
        a ground window: the keyframe chain carries the scale); then a metric network; otherwise
        the scale is only consistent (relative depth).
        """
        cfg = self.config.scale
        if self._ground_on and self._ground_scale.count > 0:
            stale = self._frames_since_ground > cfg.ground_window_frames
            log_std = self._ground_scale.log_std
            if stale:  # the keyframe hand-overs random-walk the scale since the last ground plane
                log_std = math.hypot(log_std, cfg.relative_fit_std * math.sqrt(self._frames_since_ground))
            return True, ScaleSource.FUSED_MAP if stale else ScaleSource.CAMERA_HEIGHT, log_std
        if depth.is_metric:
            return True, ScaleSource.METRIC_NETWORK, self._metric_scale.log_std
        return False, ScaleSource.NONE, self._relative_log_std

    def _scale_position_covariance(self, log_std: float, source: ScaleSource) -> NDArray[np.float64]:
        """(3, 3) covariance of the position (odom frame, odometry units^2) that the scale's uncertainty adds.

        A scale error ``e`` (log) stretches every displacement made while it lasts by ``e``: the
        path is cut into segments of the scale estimate's window (the ground filter's or the
        metric filter's frames), within which the error is one (``log_std``), and across which it
        is independent; the segments' ``log_std^2 d d^T`` add up. Called once per frame.
        """
        position = self._pose[:3, 3]
        self._scale_segment += position - self._scale_last_position
        self._scale_last_position = position.copy()
        self._scale_segment_frames += 1
        segment = log_std**2 * np.outer(self._scale_segment, self._scale_segment)
        window = (self.config.scale.ground_window_frames if source is ScaleSource.CAMERA_HEIGHT
                  else self.config.scale.window_frames)
        if self._scale_segment_frames >= window:
            self._scale_path_covariance += segment
            self._scale_segment[:] = 0.0
            self._scale_segment_frames = 0
        return self._scale_path_covariance + segment

    # --- output -------------------------------------------------------------------------------

    def _result(
        self, state: TrackingState, estimate: TrackingEstimate, keyframe_id: int, depth: DepthResult,
        tracker: str = "",
    ) -> OdometryResult:
        is_metric, source, log_std = self._scale_uncertainty(depth)
        covariance = self._covariance.copy()
        covariance[:3, :3] += self._scale_position_covariance(log_std, source)
        return OdometryResult(
            pose=self._pose.copy(), covariance=covariance, velocity=self._velocity.copy(), state=state,
            is_metric=is_metric, scale_confidence=_scale_confidence(log_std, self.config.scale.confidence_tolerance),
            keyframe_id=keyframe_id,
            residual=float(estimate.residual), inlier_ratio=float(estimate.inlier_ratio), scale_source=source,
            tracker=tracker,
        )


