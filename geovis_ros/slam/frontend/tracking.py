"""Direct photometric frame-to-keyframe tracking (LSD-SLAM / CNN-SLAM style), vectorised numpy.

The keyframe's semi-dense high-gradient pixels, with their fused inverse depth, are warped into the
current frame; the pose ``T_current_keyframe`` and an affine brightness change (gain, offset) are
found by coarse-to-fine Levenberg-Marquardt on the Huber-robust, variance-normalised photometric
residual::

    r_i = I_cur(pi(T_current_keyframe X_i)) - (gain * I_key(u_i) + offset)
    sigma_i^2 = (1 + gain^2) sigma_I^2 + c (grad I_key . d pi / d rho)^2 var(rho_i)

(``c`` = ``depth_uncertainty_weight``, LSD-SLAM's variance normalisation at c = 1; see the config.)
A Gaussian motion prior around the predicted pose keeps unobservable directions at the prediction.

The pose update is inverse-compositional (the geometric Jacobian is computed once per keyframe
depth, on the keyframe image); gain and offset are updated additively. The pose covariance is the
inverse Gauss-Newton Hessian scaled by the estimated residual variance.

Conventions: images are grey levels 0-255 (float32); pixel (u, v) = (column, row) with the centre
of the top-left pixel at (0, 0); poses are 4x4 float64 ``T_a_b``; twists are (v, w), metres and
radians; covariances are over the left perturbation ``T_keyframe_current = exp(xi) T_hat``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import invert, orthonormalized, rotation_angle, se3_exp, so3_log
from geovis_ros.slam.frontend.config import TrackingConfig
from geovis_ros.slam.frontend.estimate import TrackingEstimate, TrackingFailure, failed_estimate
from geovis_ros.slam.frontend.pyramid import ImagePyramid, sample_bilinear

_BORDER_PX = 2
_BRIGHTNESS_SCALE = 255.0  # prior on the gain is expressed in grey levels at full white
_MIN_RELATIVE_DECREASE = 1e-3  # a level stops once an accepted step lowers the cost less than this
_MAX_REJECTED_STEPS = 3  # ... or after this many consecutive steps that raised the cost
_OUTLIER_GRID_COLUMNS = 16  # the moving-object mask is a grid of cells this many across

MIN_BRIGHTNESS_GAIN = 0.2
"""A converged photometric gain (current / keyframe intensity) at or below this fails the frame.

A gain that far from 1 (the frame 5x darker than its keyframe) means the solver explained the
residual away by brightness instead of aligning the images; exposure changes between a frame and
its keyframe stay well inside the bounds.
"""
MAX_BRIGHTNESS_GAIN = 5.0
"""A converged gain at or above this fails the frame (the mirror of :data:`MIN_BRIGHTNESS_GAIN`)."""


def select_pixels(
    grad_x: NDArray[np.float32], grad_y: NDArray[np.float32], min_gradient: float, max_points: int,
    rng: np.random.Generator,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Semi-dense, evenly spread pixel selection: the strongest-gradient pixel of each small block.

    Blocks are sized so that about twice ``max_points`` blocks cover the image; a block's best
    pixel is kept when its gradient magnitude reaches ``min_gradient`` and it is at least 2 pixels
    from the border; at most ``max_points`` of those are kept (a random subset).

    Returns:
        ``(rows, cols)`` int64 pixel indices.

    """
    h, w = grad_x.shape
    magnitude = grad_x**2 + grad_y**2
    block = max(1, int(math.sqrt(h * w / (2.0 * max_points))))
    hb, wb = h // block, w // block
    blocks = magnitude[: hb * block, : wb * block].reshape(hb, block, wb, block).transpose(0, 2, 1, 3)
    best = blocks.reshape(hb, wb, block * block).argmax(axis=2)
    rows = (np.arange(hb)[:, None] * block + best // block).reshape(-1)
    cols = (np.arange(wb)[None, :] * block + best % block).reshape(-1)
    keep = (
        (magnitude[rows, cols] >= min_gradient**2)
        & (rows >= _BORDER_PX) & (rows < h - _BORDER_PX) & (cols >= _BORDER_PX) & (cols < w - _BORDER_PX)
    )
    rows, cols = rows[keep], cols[keep]
    if rows.size > max_points:
        chosen = np.sort(rng.choice(rows.size, size=max_points, replace=False))
        rows, cols = rows[chosen], cols[chosen]
    return rows, cols


@dataclass
class _LevelPoints:
    """Keyframe pixels tracked at one pyramid level; depth-dependent fields filled by set_depth."""

    u: NDArray[np.float64]  # (N,) pixel column at this level
    v: NDArray[np.float64]
    u_fine: NDArray[np.float64]  # (N,) the same position at level 0 (where the depth is sampled)
    v_fine: NDArray[np.float64]
    x_norm: NDArray[np.float64]  # (N,) normalised image coordinates (x/z, y/z)
    y_norm: NDArray[np.float64]
    intensity: NDArray[np.float64]
    grad_x: NDArray[np.float64]
    grad_y: NDArray[np.float64]
    cell_all: NDArray[np.int64]  # (N,) index of the outlier-grid cell holding the point
    # set by set_depth (only points with valid depth)
    cell: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    points: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 3)))
    inverse_depth: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    inverse_depth_var: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    jacobian: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 8)))  # [J_pose, I, 1]
    gradient: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 2)))
    ref_intensity: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))


class TrackingReference:
    """A keyframe as the direct tracker sees it: selected pixels per level and their 3-D points.

    The pixel selection depends only on the keyframe image (done once); :meth:`set_depth` updates
    the points and Jacobians whenever the keyframe's fused depth changes.

    Moving objects: the keyframe is divided into a grid of cells; after every successful track,
    :meth:`update_outlier_cells` excludes the cells where most level-0 points were outliers (a
    moving object, an occluder) from the next alignment on every level, and re-admits them once
    their points agree again.
    """

    def __init__(self, pyramid: ImagePyramid, config: TrackingConfig, rng: np.random.Generator) -> None:
        self.levels: list[_LevelPoints] = []
        width, height = pyramid.intrinsics[0].width, pyramid.intrinsics[0].height
        self._grid_columns = min(_OUTLIER_GRID_COLUMNS, width)
        cell_px = width / self._grid_columns
        self.cell_count = self._grid_columns * math.ceil(height / cell_px)
        self.excluded_cells = np.zeros(self.cell_count, bool)
        self.intrinsics = pyramid.intrinsics
        for level in range(pyramid.levels):
            k = pyramid.intrinsics[level]
            rows, cols = select_pixels(
                pyramid.grad_x[level], pyramid.grad_y[level], config.min_gradient,
                max(config.max_points >> level, 1), rng,
            )
            u, v = cols.astype(np.float64), rows.astype(np.float64)
            scale = float(2**level)
            u_fine, v_fine = (u + 0.5) * scale - 0.5, (v + 0.5) * scale - 0.5
            self.levels.append(_LevelPoints(
                u=u, v=v, u_fine=u_fine, v_fine=v_fine, cell_all=self.cells_of(u_fine, v_fine),
                x_norm=(u - k.cx) / k.fx, y_norm=(v - k.cy) / k.fy,
                intensity=pyramid.gray[level][rows, cols].astype(np.float64),
                grad_x=pyramid.grad_x[level][rows, cols].astype(np.float64),
                grad_y=pyramid.grad_y[level][rows, cols].astype(np.float64),
            ))

    def set_depth(self, inverse_depth: NDArray[np.float32], inverse_depth_var: NDArray[np.float32]) -> None:
        """Recompute 3-D points and Jacobians from the keyframe's level-0 depth.

        Args:
            inverse_depth: (H, W) float32 inverse depth, 1/metres, NaN where invalid.
            inverse_depth_var: (H, W) float32 variance of ``inverse_depth``.

        """
        for level, pts in enumerate(self.levels):
            k = self.intrinsics[level]
            rho = sample_bilinear(inverse_depth, pts.u_fine, pts.v_fine)
            var = sample_bilinear(inverse_depth_var, pts.u_fine, pts.v_fine)
            with np.errstate(invalid="ignore"):
                valid = np.isfinite(rho) & (rho > 0) & np.isfinite(var)
            rho64, var64 = rho[valid].astype(np.float64), var[valid].astype(np.float64)
            z = 1.0 / rho64
            points = np.stack([pts.x_norm[valid] * z, pts.y_norm[valid] * z, z], axis=1)
            gx, gy = pts.grad_x[valid], pts.grad_y[valid]
            # d I / d X through the projection, then left-perturbation columns [I | -[X]x].
            gu, gv = gx * k.fx * rho64, gy * k.fy * rho64
            gz = -(gu * pts.x_norm[valid] + gv * pts.y_norm[valid])
            g3 = np.stack([gu, gv, gz], axis=1)
            jacobian = np.empty((points.shape[0], 8))
            jacobian[:, :3] = g3
            jacobian[:, 3:6] = np.cross(points, g3)
            jacobian[:, 6] = pts.intensity[valid]
            jacobian[:, 7] = 1.0
            pts.points, pts.inverse_depth, pts.inverse_depth_var = points, rho64, var64
            pts.jacobian, pts.gradient = jacobian, np.stack([gx, gy], axis=1)
            pts.ref_intensity = pts.intensity[valid]
            pts.cell = pts.cell_all[valid]

    def update_outlier_cells(self, cell: NDArray[np.int64], outlier: NDArray[np.bool_]) -> None:
        """Re-decide the excluded cells from points (cell index (N,), outlier flag (N,)) of one frame.

        A cell is excluded when it holds at least 3 points and more than half of them are outliers.
        """
        counts = np.bincount(cell, minlength=self.cell_count)
        outliers = np.bincount(cell[outlier], minlength=self.cell_count)
        self.excluded_cells = (counts >= 3) & (2 * outliers > counts)

    def cells_of(self, u: NDArray[np.floating], v: NDArray[np.floating]) -> NDArray[np.int64]:
        """Grid cell index of level-0 pixel positions (inside the image)."""
        cell_px = self.intrinsics[0].width / self._grid_columns
        cell = np.clip(v // cell_px, 0, None) * self._grid_columns + np.clip(u // cell_px, 0, None)
        return np.minimum(cell, self.cell_count - 1).astype(np.int64)

    def usable(self, level: int) -> NDArray[np.bool_]:
        """(N,) True for the level's points outside excluded cells."""
        return ~self.excluded_cells[self.levels[level].cell]

    @property
    def point_count(self) -> int:
        """Number of level-0 points with valid depth."""
        return int(self.levels[0].points.shape[0])

    def median_depth(self) -> float:
        """Median depth of the level-0 points (NaN when there are none)."""
        pts = self.levels[0].points
        return float(np.median(pts[:, 2])) if pts.shape[0] else float("nan")


class MotionPrior:
    """Gaussian prior on T_current_keyframe around the predicted pose (the tracker's initial guess).

    Keeps directions the image cannot constrain (a wall of parallel stripes, a textureless frame
    corner) at the motion model's prediction instead of letting them wander or jump to a periodic
    alias. Residual ``xi ~ log(T_guess^-1 T)`` (keyframe frame; translation taken directly, which is
    the first-order twist), weights ``1 / std^2`` per axis.
    """

    def __init__(self, guess: NDArray[np.float64], translation_std: float, rotation_std: float) -> None:
        self._guess_inverse = invert(guess)
        self.information = np.array([1.0 / translation_std**2] * 3 + [1.0 / rotation_std**2] * 3)

    def residual(self, pose: NDArray[np.float64]) -> NDArray[np.float64]:
        """The residual xi (6,) of ``pose`` relative to the guess."""
        relative = self._guess_inverse @ pose
        return np.concatenate([relative[:3, 3], so3_log(relative[:3, :3])])

    def cost(self, pose: NDArray[np.float64]) -> float:
        """0.5 xi^T Lambda xi."""
        xi = self.residual(pose)
        return 0.5 * float(np.sum(self.information * xi * xi))

    def add_to(self, hessian: NDArray[np.float64], gradient: NDArray[np.float64], pose: NDArray[np.float64]) -> None:
        """Add the prior to normal equations in the update ``pose exp(-delta)`` (xi -> xi - delta)."""
        hessian[:6, :6] += np.diag(self.information)
        gradient[:6] -= self.information * self.residual(pose)


@dataclass
class _Evaluation:
    cost: float
    residual: NDArray[np.float64]  # (N,) raw intensity residual (0 where not visible)
    normalised: NDArray[np.float64]  # (N,) residual / sigma
    weight: NDArray[np.float64]  # (N,) robust weight / sigma^2 (0 where not active)
    visible: NDArray[np.bool_]  # (N,) projects inside the current image
    active: NDArray[np.bool_]  # (N,) visible and not in an excluded (moving-object) cell
    u: NDArray[np.float64]  # (N,) projection in the current image (meaningful where visible)
    v: NDArray[np.float64]


@dataclass(frozen=True)
class _Solution:
    """The converged coarse-to-fine solution of one :meth:`DirectTracker.track` call, to be judged.

    Attributes:
        pose: (4, 4) float64 T_current_keyframe, orthonormalised.
        gain, offset: affine brightness, current = gain * keyframe + offset (grey levels).
        iterations: solver iterations over all levels.
        median_depth: scene depth (keyframe units) that scales the divergence test; may be NaN.
        depth_term: (N,) float64 level-0 intensity variance caused by depth uncertainty (grey levels^2).
        prior: the motion prior the solution was found with, or None.

    """

    pose: NDArray[np.float64]
    gain: float
    offset: float
    iterations: int
    median_depth: float
    depth_term: NDArray[np.float64]
    prior: MotionPrior | None


class DirectTracker:
    """Coarse-to-fine direct photometric SE(3) + affine-brightness alignment of frames to a keyframe."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config

    def track(
        self, reference: TrackingReference, pyramid: ImagePyramid, guess: NDArray[np.float64],
        brightness_guess: tuple[float, float] = (1.0, 0.0), median_depth: float | None = None,
    ) -> TrackingEstimate:
        """Align ``pyramid`` (current frame) to ``reference`` starting from ``guess`` = T_current_keyframe.

        ``median_depth`` (keyframe units) scales the divergence test; default: the reference's.
        Never raises on bad image content: failures come back as ``success=False``.
        """
        cfg = self.config
        pose = np.asarray(guess, dtype=np.float64)
        if not np.all(np.isfinite(pose)):
            return failed_estimate(np.eye(4), TrackingFailure.NON_FINITE_GUESS)
        pose = orthonormalized(pose)
        if pyramid.texture_fraction < cfg.min_image_gradient_fraction:
            return failed_estimate(pose, TrackingFailure.TEXTURELESS)
        if reference.point_count < cfg.min_points:
            return failed_estimate(pose, TrackingFailure.TOO_FEW_KEYFRAME_POINTS)
        gain, offset = (brightness_guess if cfg.affine_brightness else (1.0, 0.0))
        depth = median_depth if median_depth is not None and math.isfinite(median_depth) else reference.median_depth()
        prior = None
        if cfg.motion_prior_translation > 0 and cfg.motion_prior_rotation_deg > 0 and math.isfinite(depth):
            prior = MotionPrior(pose, cfg.motion_prior_translation * depth, math.radians(cfg.motion_prior_rotation_deg))
        iterations = 0
        levels = min(len(reference.levels), pyramid.levels)
        # The depth-uncertainty term uses the initial guess's baseline: re-evaluating it at the
        # estimate would reward a diverging translation with smaller normalised residuals.
        weight = cfg.depth_uncertainty_weight
        depth_terms = [
            weight * self._depth_sigma_term(reference.levels[level], pyramid.intrinsics[level], pose) if weight > 0
            else np.zeros(reference.levels[level].points.shape[0]) for level in range(levels)
        ]
        for level in reversed(range(levels)):
            pts = reference.levels[level]
            if pts.points.shape[0] < 8:
                continue
            pose, gain, offset, used = self._solve_level(
                pts, pyramid.gray[level], pyramid.intrinsics[level], pose, gain, offset, level, depth_terms[level],
                prior, reference.usable(level),
            )
            iterations += used
        solution = _Solution(orthonormalized(pose), gain, offset, iterations, depth, depth_terms[0], prior)
        return self._assess(reference, pyramid, solution)

    # ------------------------------------------------------------------------------------------

    def _depth_sigma_term(
        self, pts: _LevelPoints, k: Intrinsics, pose: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """(grad I . d pixel / d rho)^2 var(rho): intensity variance caused by depth uncertainty.

        The variance enters relative to each point's own inverse depth, evaluated at the level's
        median inverse depth: ``var(rho) / rho^2 * median(rho)^2``. A network's claimed variance
        grows with its own prediction (std proportional to depth), so weighting by the absolute
        variance would favour points predicted too far and bias the translation, hence the scale
        (estimates too long under forward motion); the relative variance carries the same "how
        sure is this depth" information without correlating the weights with the depth errors.
        """
        rotation, translation = pose[:3, :3], pose[:3, 3]
        bearing = pts.points * pts.inverse_depth[:, None]  # (x/z, y/z, 1)
        y = bearing @ rotation.T + pts.inverse_depth[:, None] * translation
        z = np.where(np.abs(y[:, 2]) > 1e-9, y[:, 2], 1e-9)
        du = k.fx * (translation[0] * z - y[:, 0] * translation[2]) / z**2
        dv = k.fy * (translation[1] * z - y[:, 1] * translation[2]) / z**2
        along = pts.gradient[:, 0] * du + pts.gradient[:, 1] * dv
        if pts.inverse_depth.size == 0:
            return np.zeros(0)
        typical = float(np.median(pts.inverse_depth))
        return along**2 * pts.inverse_depth_var * (typical / pts.inverse_depth) ** 2

    def _evaluate(
        self, pts: _LevelPoints, image: NDArray[np.float32], k: Intrinsics, pose: NDArray[np.float64],
        gain: float, offset: float, depth_term: NDArray[np.float64], tukey: bool, usable: NDArray[np.bool_],
    ) -> _Evaluation:
        """Residuals, robust weights (Huber, or Tukey's biweight when ``tukey``) and robust cost.

        Points outside ``usable`` (excluded cells) get no weight and a constant cost.
        """
        cfg = self.config
        warped = pts.points @ pose[:3, :3].T + pose[:3, 3]
        z = warped[:, 2]
        in_front = z > 1e-6
        safe_z = np.where(in_front, z, 1.0)
        u = k.fx * warped[:, 0] / safe_z + k.cx
        v = k.fy * warped[:, 1] / safe_z + k.cy
        values = sample_bilinear(image, np.where(in_front, u, np.nan), v)
        visible = np.isfinite(values)
        residual = np.where(visible, values - (gain * pts.ref_intensity + offset), 0.0)
        variance = (1.0 + gain * gain) * cfg.intensity_noise**2 + depth_term
        sigma = np.sqrt(variance)
        normalised = residual / sigma
        magnitude = np.abs(normalised)
        if tukey:
            c = cfg.tukey_threshold
            inside = magnitude < c
            ratio_sq = np.minimum(magnitude / c, 1.0) ** 2
            robust_weight = np.where(inside, (1.0 - ratio_sq) ** 2, 0.0)
            point_cost = c * c / 6.0 * (1.0 - (1.0 - ratio_sq) ** 3)
            outside_cost = c * c / 6.0  # a point that leaves the image costs as much as an outlier
        else:
            huber = cfg.huber_threshold
            robust_weight = np.where(magnitude <= huber, 1.0, huber / np.maximum(magnitude, 1e-12))
            point_cost = np.where(magnitude <= huber, 0.5 * magnitude**2, huber * (magnitude - 0.5 * huber))
            # A point that leaves the image costs as much as an outlier at the inlier threshold.
            outside_cost = huber * (cfg.inlier_threshold - 0.5 * huber)
        active = visible & usable
        weight = np.where(active, robust_weight / variance, 0.0)
        cost = float(np.sum(np.where(active, point_cost, outside_cost)))
        return _Evaluation(cost, residual, normalised, weight, visible, active, u, v)

    def _normal_equations(
        self, pts: _LevelPoints, evaluation: _Evaluation, gain: float, offset: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        cfg = self.config
        jacobian = pts.jacobian * np.array([-gain] * 6 + [-1.0, -1.0])
        weighted = jacobian * evaluation.weight[:, None]
        hessian = weighted.T @ jacobian
        gradient = weighted.T @ evaluation.residual
        if not cfg.affine_brightness:
            hessian[6:, :] = 0.0
            hessian[:, 6:] = 0.0
            hessian[6, 6] = hessian[7, 7] = 1.0
            gradient[6:] = 0.0
            return hessian, gradient
        prior = cfg.brightness_prior_weight * max(int(np.count_nonzero(evaluation.active)), 1)
        gain_info = prior * (_BRIGHTNESS_SCALE / cfg.intensity_noise) ** 2
        offset_info = prior / cfg.intensity_noise**2
        hessian[6, 6] += gain_info
        hessian[7, 7] += offset_info
        gradient[6] += gain_info * (gain - 1.0)
        gradient[7] += offset_info * offset
        return hessian, gradient

    def _solve_level(
        self, pts: _LevelPoints, image: NDArray[np.float32], k: Intrinsics, pose: NDArray[np.float64],
        gain: float, offset: float, level: int, depth_term: NDArray[np.float64], prior: MotionPrior | None,
        usable: NDArray[np.bool_],
    ) -> tuple[NDArray[np.float64], float, float, int]:
        """Levenberg-Marquardt at one level; stops when the step or the cost decrease becomes negligible."""
        cfg = self.config
        step_tolerance = cfg.convergence_step * 2**level  # a coarse pixel is 2^level fine pixels
        tukey = level == 0 and cfg.tukey_threshold > 0
        current = self._evaluate(pts, image, k, pose, gain, offset, depth_term, tukey, usable)
        current_cost = current.cost + (prior.cost(pose) if prior else 0.0)
        hessian, gradient = self._normal_equations(pts, current, gain, offset)
        if prior:
            prior.add_to(hessian, gradient, pose)
        damping = 1e-4
        used = rejected = 0
        for _ in range(cfg.max_iterations):
            used += 1
            damped = hessian + damping * np.diag(np.diag(hessian) + 1e-9)
            try:
                step = -np.linalg.solve(damped, gradient)
            except np.linalg.LinAlgError:
                break
            small_step = float(np.linalg.norm(step[:6])) < step_tolerance
            candidate_pose = pose @ invert(se3_exp(step[:6]))
            candidate_gain, candidate_offset = gain + step[6], offset + step[7]
            candidate = self._evaluate(pts, image, k, candidate_pose, candidate_gain, candidate_offset, depth_term,
                                       tukey, usable)
            candidate_cost = candidate.cost + (prior.cost(candidate_pose) if prior else 0.0)
            if candidate_cost <= current_cost:
                decrease = current_cost - candidate_cost
                pose, gain, offset, current = candidate_pose, candidate_gain, candidate_offset, candidate
                current_cost = candidate_cost
                if small_step or decrease < _MIN_RELATIVE_DECREASE * current_cost:
                    break
                hessian, gradient = self._normal_equations(pts, current, gain, offset)
                if prior:
                    prior.add_to(hessian, gradient, pose)
                damping = max(damping * 0.25, 1e-7)
                rejected = 0
            else:
                rejected += 1
                if small_step or rejected >= _MAX_REJECTED_STEPS:
                    break
                damping *= 10.0
        return pose, float(gain), float(offset), used

    def _assess(self, reference: TrackingReference, pyramid: ImagePyramid, solution: _Solution) -> TrackingEstimate:
        """Residual, inlier ratio and covariance of ``solution`` at level 0, and whether it failed.

        On success the reference's moving-object cells are updated from this frame's outliers.
        """
        cfg = self.config
        pose, gain, offset, prior = solution.pose, solution.gain, solution.offset, solution.prior
        pts, k = reference.levels[0], pyramid.intrinsics[0]
        final = self._evaluate(pts, pyramid.gray[0], k, pose, gain, offset, solution.depth_term,
                               cfg.tukey_threshold > 0, reference.usable(0))
        hessian, gradient = self._normal_equations(pts, final, gain, offset)
        if prior:
            prior.add_to(hessian, gradient, pose)
        visible_count = int(np.count_nonzero(final.active))
        total = max(pts.points.shape[0], 1)
        inliers = final.active & (np.abs(final.normalised) < cfg.inlier_threshold)
        inlier_ratio = float(np.count_nonzero(inliers)) / max(visible_count, 1)
        # RMS in grey levels of the part of the residual the image noise must explain: the normalised
        # residual times the intensity-only sigma. Without the depth-uncertainty term this is the raw
        # residual; with it, a point whose depth is uncertain may differ by more without failing the frame.
        image_sigma = math.sqrt(1.0 + gain * gain) * cfg.intensity_noise
        residual = (image_sigma * math.sqrt(float(np.mean(final.normalised[inliers] ** 2))) if np.any(inliers)
                    else math.inf)
        weighted_sq = float(np.sum(final.weight * final.residual**2))
        unit_variance = weighted_sq / max(visible_count - 8, 1)
        try:
            covariance = np.linalg.inv(hessian)[:6, :6] * max(unit_variance, 1e-12)
            covariance = 0.5 * (covariance + covariance.T)
        except np.linalg.LinAlgError:
            covariance = np.eye(6) * 1e6
        failure = self._failure(solution, visible_count, inlier_ratio, residual)
        outlier = np.abs(final.normalised[final.visible]) > cfg.inlier_threshold
        # Outliers in cells that were already excluded: persistent (moving objects, not a glitch).
        persistent = outlier & ~final.active[final.visible]
        if failure is None:
            reference.update_outlier_cells(pts.cell[final.visible], outlier)
        return TrackingEstimate(
            pose_current_keyframe=pose, covariance=covariance if failure is None else np.eye(6) * 1e6,
            success=failure is None, failure=failure, residual=residual, inlier_ratio=inlier_ratio,
            visible_ratio=float(np.count_nonzero(final.visible)) / total, point_count=visible_count,
            brightness=(gain, offset), iterations=solution.iterations,
            projected=np.stack([final.u[final.visible], final.v[final.visible]], axis=1), persistent_outlier=persistent,
        )

    def _failure(
        self, solution: _Solution, visible_count: int, inlier_ratio: float, residual: float
    ) -> TrackingFailure | None:
        """The first test ``solution`` fails, in order of severity, or None when it is a good track.

        ``visible_count``: usable level-0 points inside the frame; ``inlier_ratio``: their inlier
        fraction; ``residual``: robust RMS residual, grey levels.
        """
        cfg = self.config
        pose, gain = solution.pose, solution.gain
        if not np.all(np.isfinite(pose)) or not math.isfinite(gain):
            return TrackingFailure.DIVERGED_NON_FINITE
        if visible_count < cfg.min_points:
            return TrackingFailure.TOO_FEW_VISIBLE_POINTS
        if np.linalg.norm(pose[:3, 3]) > cfg.max_translation_depth_ratio * solution.median_depth:
            return TrackingFailure.DIVERGED_TRANSLATION
        if math.degrees(rotation_angle(pose[:3, :3])) > cfg.max_rotation_deg:
            return TrackingFailure.DIVERGED_ROTATION
        if inlier_ratio < cfg.min_inlier_ratio:
            return TrackingFailure.LOW_INLIER_RATIO
        if residual > cfg.max_residual:
            return TrackingFailure.HIGH_RESIDUAL
        if not MIN_BRIGHTNESS_GAIN < gain < MAX_BRIGHTNESS_GAIN:
            return TrackingFailure.IMPLAUSIBLE_GAIN
        return None
