"""Loop detection: appearance retrieval + geometric verification of loops between keyframes.

:class:`LoopDetector` keeps, per keyframe, a compact global descriptor (a small zero-mean,
unit-norm grey thumbnail; cosine similarity = dot product) and ORB features with their 3D
points from the keyframe depth. A new keyframe is compared with every stored keyframe outside a
recent window (threshold adapted to the similarity of consecutive keyframes); the most similar
candidates are verified by matching ORB descriptors (ratio test) and PnP-RANSAC in both
directions (each keyframe's pixels against the other's 3D points), which must agree. A verified
loop gives the relative pose ``T_candidate_query`` (information-weighted mean of both
directions), its inlier count and an information matrix from the inliers' reprojection
Jacobians with pixel noise and each point's depth uncertainty (plus a floor). The PnP pose is
then refined by dense direct photometric alignment in both directions (each keyframe's image and
fused depth against the other's image, :class:`~geovis_ros.slam.frontend.tracking.DirectTracker`):
thousands of pixels at sub-pixel precision instead of a few hundred ORB corners.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.errors import GeovisError
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import invert, make_pose, se3_adjoint, se3_exp, se3_log
from geovis_ros.slam.frontend.config import TrackingConfig
from geovis_ros.slam.frontend.pyramid import ImagePyramid
from geovis_ros.slam.frontend.tracking import DirectTracker, TrackingReference


class LoopClosureConfigError(GeovisError, ValueError):
    """A loop-closure parameter is out of range (the message names it)."""


@dataclass(frozen=True)
class LoopClosureConfig:
    """Retrieval and verification settings.

    Attributes:
        thumbnail_size: (width, height) of the global descriptor thumbnail, pixels.
        recent_keyframes_excluded: the most recent keyframes never proposed as loop candidates.
        min_similarity: cosine similarity of thumbnails a candidate needs at least, in (-1, 1).
        relative_similarity: a candidate also needs this fraction of the similarity between the
            new keyframe and the previous one (the threshold adapts to how fast the view changes,
            as the covisibility score does in ORB-SLAM).
        max_candidates: candidates verified per keyframe (most similar first).
        orb_features: ORB keypoints per keyframe.
        orb_patch_size: ORB patch size (and edge threshold), pixels; capped at a sixth of the
            image's shorter side so small images keep enough keypoints.
        orb_levels: ORB pyramid levels (scale factor 1.2); few levels localise keypoints best.
        max_depth_step: keypoints whose neighbouring depths differ by more than this fraction
            (occlusion boundaries) get no 3D point.
        match_ratio: Lowe ratio test threshold for descriptor matches.
        ransac_reprojection_px: PnP-RANSAC inlier threshold, pixels (these inliers are counted).
        refine_reprojection_px: the final pose is refined on the matches within this many pixels.
        ransac_iterations: PnP-RANSAC iterations.
        min_inliers: PnP inliers needed to accept a loop.
        min_inlier_ratio: inliers / ratio-test matches needed to accept a loop.
        max_mutual_disagreement: (fraction of the median inlier depth, degrees) by which the
            relative poses from PnP in the two directions may differ.
        pixel_sigma: keypoint noise, pixels (scales the information matrix).
        covariance_floor: (fraction of the median inlier depth, radians) standard deviations
            added to the loop covariance for model errors (calibration, rolling shutter) beyond
            the pixel and depth noise it accounts for.
        depth_bias_std: relative standard deviation of the depth error common to a whole keyframe
            (a scale error of the fused depth, which per-point noise does not average away); it
            moves the loop's translation by that fraction of the distance between the two
            cameras, and is added to the loop covariance as such (translation, every axis).
        photometric: tracker settings of the photometric refinement of verified loops (each
            keyframe's fused depth and image aligned to the other image, both directions, fused
            by information like the PnP directions); None keeps the PnP pose. The refinement
            needs each stored keyframe's grey image (uint8) and inverse depth (float16): 3 bytes
            per pixel per keyframe in the database, at most ``dense_max_width`` pixels wide
            (230 kB at 320x240; 230 MB for a full database of 1000 keyframes).
        dense_max_width: images wider than this are stored for the refinement at 1/2, 1/4, ...
            of their size (area-averaged image, nearest inverse depth, intrinsics rescaled), so
            a high-resolution camera does not multiply the database's memory.
        default_depth_relative_std: relative depth standard deviation assumed where a keyframe
            gives none.
        max_database_size: keyframes kept for retrieval; when full, the keyframe most similar
            to its stored neighbour in time is dropped (never one in the recent window).

    """

    thumbnail_size: tuple[int, int] = (32, 24)
    recent_keyframes_excluded: int = 15
    min_similarity: float = 0.2
    relative_similarity: float = 0.8
    max_candidates: int = 3
    orb_features: int = 500
    orb_patch_size: int = 31
    orb_levels: int = 2
    max_depth_step: float = 0.05
    match_ratio: float = 0.8
    ransac_reprojection_px: float = 3.0
    refine_reprojection_px: float = 1.5
    ransac_iterations: int = 200
    min_inliers: int = 25
    min_inlier_ratio: float = 0.3
    max_mutual_disagreement: tuple[float, float] = (0.015, 1.0)
    pixel_sigma: float = 1.0
    covariance_floor: tuple[float, float] = (0.002, 0.001)
    depth_bias_std: float = 0.03
    photometric: TrackingConfig | None = TrackingConfig(max_iterations=30, motion_prior_translation=0.0)
    dense_max_width: int = 320
    default_depth_relative_std: float = 0.05
    max_database_size: int = 1000

    def __post_init__(self) -> None:
        checks = {
            "thumbnail_size": min(self.thumbnail_size) >= 4,
            "recent_keyframes_excluded": self.recent_keyframes_excluded >= 1,
            "min_similarity": -1.0 < self.min_similarity < 1.0,
            "relative_similarity": self.relative_similarity >= 0.0,
            "max_candidates": self.max_candidates >= 1,
            "orb_features": self.orb_features >= 8,
            "orb_patch_size": self.orb_patch_size >= 5,
            "orb_levels": self.orb_levels >= 1,
            "max_depth_step": self.max_depth_step > 0,
            "match_ratio": 0.0 < self.match_ratio <= 1.0,
            "ransac_reprojection_px": self.ransac_reprojection_px > 0,
            "refine_reprojection_px": self.refine_reprojection_px > 0,
            "ransac_iterations": self.ransac_iterations >= 1,
            "min_inliers": self.min_inliers >= 6,
            "min_inlier_ratio": 0.0 <= self.min_inlier_ratio <= 1.0,
            "max_mutual_disagreement": min(self.max_mutual_disagreement) > 0,
            "pixel_sigma": self.pixel_sigma > 0,
            "covariance_floor": min(self.covariance_floor) > 0,
            "depth_bias_std": self.depth_bias_std >= 0,
            "dense_max_width": self.dense_max_width >= 16,
            "default_depth_relative_std": self.default_depth_relative_std >= 0,
            "max_database_size": self.max_database_size > self.recent_keyframes_excluded,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise LoopClosureConfigError(f"invalid loop-closure setting(s): {', '.join(bad)} (see LoopClosureConfig)")


@dataclass(frozen=True)
class LoopClosure:
    """A verified revisit: keyframe ``query_id`` sees the place of keyframe ``match_id``.

    Attributes:
        query_id: the new keyframe.
        match_id: the earlier keyframe it closes a loop with.
        pose_match_query: (4, 4) float64 ``T_match_query`` (query camera in the match camera frame).
        information: (6, 6) float64 information of the relative pose, twist (v, w) in the query
            frame (1/m^2, 1/rad^2); the pose-graph edge ``match -> query`` uses it as is.
        inliers: PnP-RANSAC inliers.
        inlier_ratio: inliers / descriptor matches.
        similarity: thumbnail cosine similarity.

    """

    query_id: int
    match_id: int
    pose_match_query: NDArray[np.float64]
    information: NDArray[np.float64]
    inliers: int
    inlier_ratio: float
    similarity: float


@dataclass(frozen=True)
class _Entry:
    keyframe_id: int
    serial: int  # insertion counter: recency independent of caller ids
    keypoints: NDArray[np.float32]  # (N, 2) pixels
    descriptors: NDArray[np.uint8]  # (N, 32) ORB
    points: NDArray[np.float32]  # (N, 3) camera frame metres, NaN without depth
    depth_std: NDArray[np.float32]  # (N,) standard deviation of the points' depth, metres
    intrinsics: Intrinsics
    dense: _DenseKeyframe | None  # for the photometric refinement (None when it is off)


@dataclass(frozen=True)
class _DenseKeyframe:
    gray: NDArray[np.uint8]  # (h, w), at most LoopClosureConfig.dense_max_width wide
    inverse_depth: NDArray[np.float16]  # (h, w) 1/metres, NaN where unknown
    inverse_depth_relative_std: float  # median std(inverse depth) / inverse depth
    intrinsics: Intrinsics  # of the stored (h, w) images


@dataclass(frozen=True)
class _PnpSolution:
    pose_query_match: NDArray[np.float64]  # (4, 4) T_query_match
    information: NDArray[np.float64]  # (6, 6) of a right perturbation of the query camera
    inliers: int
    inlier_ratio: float
    scene_depth: float  # median inlier depth in the query camera, metres


def _information_weighted_mean(
    pose_a: NDArray[np.float64], information_a: NDArray[np.float64],
    pose_b: NDArray[np.float64], information_b: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Fuse two estimates (4, 4) of one pose with informations (6, 6) of right perturbations.

    Returns ``(pose, information)`` (one Gauss-Newton step from ``pose_a``), None when the summed
    information is singular.
    """
    information = 0.5 * (information_a + information_a.T + information_b + information_b.T)
    try:
        step = np.linalg.solve(information, information_b @ se3_log(invert(pose_a) @ pose_b))
    except np.linalg.LinAlgError:
        return None
    return pose_a @ se3_exp(step), information


def _pyramid(dense: _DenseKeyframe, config: TrackingConfig) -> ImagePyramid:
    """The tracker's image pyramid of a stored keyframe."""
    return ImagePyramid.build(np.repeat(dense.gray[:, :, None], 3, axis=2), dense.intrinsics, config)


def _tracking_reference(dense: _DenseKeyframe, pyramid: ImagePyramid, config: TrackingConfig) -> TrackingReference:
    """A stored keyframe (and its ``pyramid``) as the direct tracker's reference (pixels and fused inverse depth)."""
    reference = TrackingReference(pyramid, config, np.random.default_rng(0))
    inverse_depth = dense.inverse_depth.astype(np.float32)
    reference.set_depth(inverse_depth, (dense.inverse_depth_relative_std * inverse_depth) ** 2)
    return reference


def global_descriptor(rgb: NDArray[np.uint8], size: tuple[int, int] = (32, 24)) -> NDArray[np.float32]:
    """Zero-mean, unit-norm grey thumbnail (width*height,) float32 of an (H, W, 3) uint8 RGB image.

    A uniform image (no texture) gives the zero vector (similarity 0 with everything).
    """
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return thumb / norm if norm > 1e-3 * thumb.size else np.zeros_like(thumb)


def pnp_information(
    points_query: NDArray[np.floating],
    intrinsics: Intrinsics,
    pixel_sigma: float,
    depth_directions: NDArray[np.floating] | None = None,
    depth_std: NDArray[np.floating] | None = None,
) -> NDArray[np.float64]:
    """Information (6, 6) of a camera pose from the reprojections of points (N, 3) in its frame.

    Sum over points of J^T S^-1 J, with J (2, 6) the derivative of the pixel with respect to a
    right perturbation ``T <- T exp(delta)`` of the camera pose (twist (v, w), camera frame) and
    S (2, 2) the pixel covariance: ``pixel_sigma^2 I`` plus, when given, the image of each
    point's depth error: a point whose depth (in the camera it was measured from) has standard
    deviation ``depth_std`` (N,) metres moves along ``depth_directions`` (N, 3) (d point / d depth,
    in this camera's frame).
    """
    p = np.asarray(points_query, dtype=np.float64)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    projection = np.zeros((p.shape[0], 2, 3))
    projection[:, 0, 0] = intrinsics.fx / z
    projection[:, 0, 2] = -intrinsics.fx * x / z**2
    projection[:, 1, 1] = intrinsics.fy / z
    projection[:, 1, 2] = -intrinsics.fy * y / z**2
    # A point fixed in the world moves in the perturbed camera frame as p' = exp(-delta) p.
    point_jacobian = np.zeros((p.shape[0], 3, 6))
    point_jacobian[:, :, :3] = -np.eye(3)
    point_jacobian[:, 0, 4], point_jacobian[:, 0, 5] = -z, y  # d(p')/d(w) = [p]x
    point_jacobian[:, 1, 3], point_jacobian[:, 1, 5] = z, -x
    point_jacobian[:, 2, 3], point_jacobian[:, 2, 4] = -y, x
    jacobian = projection @ point_jacobian
    pixel_covariance = np.broadcast_to(np.eye(2) * pixel_sigma**2, (p.shape[0], 2, 2)).copy()
    if depth_directions is not None and depth_std is not None:
        shift = np.einsum("nij,nj->ni", projection, np.asarray(depth_directions, dtype=np.float64))
        shift *= np.asarray(depth_std, dtype=np.float64)[:, None]
        pixel_covariance += shift[:, :, None] * shift[:, None, :]
    return np.einsum("nki,nkl,nlj->ij", jacobian, np.linalg.inv(pixel_covariance), jacobian)


def sample_smooth_depth(
    depth: NDArray[np.floating], uv: NDArray[np.floating], max_relative_step: float
) -> NDArray[np.float32]:
    """Bilinear depth (N,) float32 metres at sub-pixel points uv (N, 2), NaN near depth edges.

    A point gets NaN when any of its four neighbouring depths is invalid (NaN, <= 0, outside the
    image) or when they differ by more than ``max_relative_step`` relative to the nearest: such
    points sit on an occlusion boundary where neither side's depth is reliable.
    """
    h, w = depth.shape
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    u0, v0 = np.floor(uv[:, 0]).astype(np.intp), np.floor(uv[:, 1]).astype(np.intp)
    inside = (u0 >= 0) & (v0 >= 0) & (u0 + 1 < w) & (v0 + 1 < h)
    u0, v0 = np.where(inside, u0, 0), np.where(inside, v0, 0)
    corners = np.stack([depth[v0, u0], depth[v0, u0 + 1], depth[v0 + 1, u0], depth[v0 + 1, u0 + 1]], axis=1)
    fu, fv = uv[:, 0] - u0, uv[:, 1] - v0
    weights = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv], axis=1)
    with np.errstate(invalid="ignore"):
        nearest, farthest = corners.min(axis=1), corners.max(axis=1)
        valid = inside & np.all(np.isfinite(corners), axis=1) & (nearest > 0)
        valid &= farthest <= (1.0 + max_relative_step) * nearest
    z = np.sum(weights * np.where(np.isfinite(corners), corners, 0.0), axis=1)
    return np.where(valid, z, np.nan).astype(np.float32)


class LoopDetector:
    """Keyframe database for place recognition with geometric verification (bounded size)."""

    def __init__(self, config: LoopClosureConfig = LoopClosureConfig()) -> None:
        """An empty database."""
        self.config = config
        self._orb: tuple[int, cv2.ORB] | None = None  # (patch size, detector), made for the image size
        self._entries: list[_Entry] = []
        self._thumbnails = np.zeros((0, config.thumbnail_size[0] * config.thumbnail_size[1]), dtype=np.float32)
        self._serial = 0

    def __len__(self) -> int:
        """Keyframes in the database."""
        return len(self._entries)

    def reset(self) -> None:
        """Forget every keyframe."""
        self._entries.clear()
        self._thumbnails = self._thumbnails[:0]
        self._serial = 0

    def add_keyframe(
        self, keyframe_id: int, rgb: NDArray[np.uint8], depth: NDArray[np.floating], intrinsics: Intrinsics,
        depth_std: NDArray[np.floating] | None = None,
    ) -> list[LoopClosure]:
        """Look for loops of a new keyframe, then store it.

        Args:
            keyframe_id: caller's id of the keyframe (returned in :class:`LoopClosure`).
            rgb: (H, W, 3) uint8 image.
            depth: (H, W) metres, NaN where unknown (the keyframe's fused depth).
            intrinsics: intrinsics of ``rgb`` and ``depth``.
            depth_std: (H, W) standard deviation of ``depth``, metres; None (or NaN pixels) uses
                ``default_depth_relative_std`` times the depth.

        Returns:
            Verified loops, most inliers first (empty when none).

        """
        if rgb.shape != (intrinsics.height, intrinsics.width, 3) or depth.shape != rgb.shape[:2]:
            raise ValueError(
                f"rgb {rgb.shape} and depth {depth.shape} must match the "
                f"{intrinsics.width}x{intrinsics.height} intrinsics"
            )
        if depth_std is not None and depth_std.shape != depth.shape:
            raise ValueError(f"depth_std {depth_std.shape} must match depth {depth.shape}")
        thumbnail = global_descriptor(rgb, self.config.thumbnail_size)
        entry = self._describe(keyframe_id, rgb, depth, depth_std, intrinsics)
        loops = self._query(entry, thumbnail)
        self._entries.append(entry)
        self._thumbnails = np.concatenate([self._thumbnails, thumbnail[None]], axis=0)
        self._serial += 1
        if len(self._entries) > self.config.max_database_size:
            self._drop_redundant()
        return loops

    def _detector(self, shorter_side: int) -> cv2.ORB:
        """The ORB detector for images whose shorter side is ``shorter_side`` pixels."""
        patch = max(5, min(self.config.orb_patch_size, shorter_side // 6))
        if self._orb is None or self._orb[0] != patch:
            orb = cv2.ORB.create(
                nfeatures=self.config.orb_features, scaleFactor=1.2, nlevels=self.config.orb_levels,
                edgeThreshold=patch, patchSize=patch, fastThreshold=10,
            )
            self._orb = (patch, orb)
        return self._orb[1]

    def _describe(
        self, keyframe_id: int, rgb: NDArray[np.uint8], depth: NDArray[np.floating],
        depth_std: NDArray[np.floating] | None, intrinsics: Intrinsics,
    ) -> _Entry:
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        keypoints, found = self._detector(min(grey.shape)).detectAndCompute(grey, None)
        descriptors = np.zeros((0, 32), dtype=np.uint8) if found is None else np.asarray(found, dtype=np.uint8)
        uv = np.array([kp.pt for kp in keypoints], dtype=np.float32).reshape(-1, 2)
        z = sample_smooth_depth(depth, uv, self.config.max_depth_step)
        points = np.stack(
            [(uv[:, 0] - intrinsics.cx) / intrinsics.fx * z, (uv[:, 1] - intrinsics.cy) / intrinsics.fy * z, z], axis=1
        ).astype(np.float32)
        std = np.full(z.shape, np.nan, dtype=np.float32)
        if depth_std is not None:
            col = np.clip(np.rint(uv[:, 0]).astype(np.intp), 0, intrinsics.width - 1)
            row = np.clip(np.rint(uv[:, 1]).astype(np.intp), 0, intrinsics.height - 1)
            std = depth_std[row, col].astype(np.float32)
        std = np.where(np.isfinite(std) & (std >= 0), std, self.config.default_depth_relative_std * z)
        dense = None
        if self.config.photometric is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                inverse_depth = np.where(depth > 0, 1.0 / depth, np.nan)
                relative = np.asarray(depth_std, np.float64) / depth if depth_std is not None else np.array([np.nan])
            relative = relative[np.isfinite(relative) & (relative >= 0)]
            factor = 1
            while intrinsics.width // factor > self.config.dense_max_width:
                factor *= 2
            stored = intrinsics.resized(intrinsics.width // factor, intrinsics.height // factor)
            stored_grey: NDArray[np.uint8] = np.asarray(grey, dtype=np.uint8)
            if factor > 1:
                stored_grey = np.asarray(cv2.resize(stored_grey, (stored.width, stored.height),
                                                    interpolation=cv2.INTER_AREA), dtype=np.uint8)
                # NEAREST_EXACT samples at pixel centres like INTER_AREA and Intrinsics.resized (plain
                # NEAREST takes each block's top-left pixel: depth shifted by (factor - 1) / 2 px).
                inverse_depth = cv2.resize(inverse_depth.astype(np.float32), (stored.width, stored.height),
                                           interpolation=cv2.INTER_NEAREST_EXACT)
            dense = _DenseKeyframe(
                stored_grey, inverse_depth.astype(np.float16),
                float(np.median(relative)) if relative.size else self.config.default_depth_relative_std,
                stored,
            )
        return _Entry(keyframe_id, self._serial, uv, descriptors, points, std.astype(np.float32), intrinsics, dense)

    def _query(self, entry: _Entry, thumbnail: NDArray[np.float32]) -> list[LoopClosure]:
        serials = np.fromiter((e.serial for e in self._entries), dtype=np.int64, count=len(self._entries))
        eligible = serials <= entry.serial - self.config.recent_keyframes_excluded
        if not np.any(eligible):
            return []
        similarity = self._thumbnails @ thumbnail
        threshold = max(self.config.min_similarity, self.config.relative_similarity * float(similarity[-1]))
        similarity[~eligible] = -np.inf
        order = np.argsort(-similarity)[: self.config.max_candidates]
        loops = []
        for index in order:
            if similarity[index] < threshold:
                break
            loop = self._verify(entry, self._entries[index], float(similarity[index]))
            if loop is not None:
                loops.append(loop)
        return sorted(loops, key=lambda loop: -loop.inliers)

    def _verify(self, query: _Entry, match: _Entry, similarity: float) -> LoopClosure | None:
        """Geometric check of a candidate: PnP both ways (each keyframe's pixels on the other's 3D points).

        Both directions must pass the inlier thresholds and agree on the relative pose (a wrong or
        degenerate solution rarely repeats with the roles swapped); the loop pose is their
        information-weighted mean, refined photometrically when the config asks for it.
        """
        cfg = self.config
        forward = self._solve_pnp(query, match)
        backward = self._solve_pnp(match, query) if forward is not None else None
        if forward is None or backward is None:
            return None
        pose_match_query_forward = invert(forward.pose_query_match)
        # The backward solution's camera is the match: its pose_query_match is T_match_query.
        if not self._agree(pose_match_query_forward, backward.pose_query_match, forward.scene_depth):
            return None
        # The loop edge's error twist lives in the query frame; the backward solution's is a
        # perturbation d' of the match camera, which is d = -Ad(T_match_query)^-1 d' there.
        adjoint = se3_adjoint(pose_match_query_forward)
        fused = _information_weighted_mean(
            pose_match_query_forward, forward.information,
            backward.pose_query_match, adjoint.T @ backward.information @ adjoint,
        )
        if fused is None:
            return None  # degenerate geometry (e.g. all inliers on a line)
        refined = self._refine_photometric(query, match, fused[0], forward.scene_depth)
        pose, information = refined if refined is not None else fused
        baseline = float(np.linalg.norm(pose[:3, 3]))
        floor_t = np.hypot(cfg.covariance_floor[0] * forward.scene_depth, cfg.depth_bias_std * baseline)
        floor = np.diag([floor_t**2] * 3 + [cfg.covariance_floor[1] ** 2] * 3)
        try:
            information = np.linalg.inv(np.linalg.inv(information) + floor)
        except np.linalg.LinAlgError:
            return None
        return LoopClosure(
            query.keyframe_id, match.keyframe_id, pose, 0.5 * (information + information.T),
            min(forward.inliers, backward.inliers), min(forward.inlier_ratio, backward.inlier_ratio), similarity,
        )

    def _agree(self, pose_a: NDArray[np.float64], pose_b: NDArray[np.float64], scene_depth: float) -> bool:
        """True when two estimates (4, 4) of one relative pose differ by at most ``max_mutual_disagreement``."""
        difference = se3_log(invert(pose_a) @ pose_b)
        limit_t, limit_deg = self.config.max_mutual_disagreement
        return bool(np.linalg.norm(difference[:3]) <= limit_t * scene_depth
                    and np.degrees(np.linalg.norm(difference[3:])) <= limit_deg)

    def _refine_photometric(
        self, query: _Entry, match: _Entry, pose_match_query: NDArray[np.float64], scene_depth: float,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
        """Direct alignment of the two keyframes in both directions, started at the PnP pose.

        Returns ``(T_match_query (4, 4), information (6, 6))`` in the loop's convention (right
        perturbation, query frame), or None when the refinement is off, a direction fails, or
        the directions disagree with each other or with the PnP pose (``max_mutual_disagreement``).
        """
        tracking = self.config.photometric
        if tracking is None or query.dense is None or match.dense is None:
            return None
        tracker = DirectTracker(tracking)
        query_pyramid, match_pyramid = _pyramid(query.dense, tracking), _pyramid(match.dense, tracking)
        # Forward: the match keyframe's points into the query image; covariance of a left
        # perturbation of T_match_query in the match frame, i.e. Ad(T_match_query^-1) d on the right.
        forward = tracker.track(_tracking_reference(match.dense, match_pyramid, tracking), query_pyramid,
                                invert(pose_match_query))
        # Backward: the query's points into the match image; a left perturbation d of
        # T_query_match in the query frame is the right perturbation -d of T_match_query.
        backward = tracker.track(_tracking_reference(query.dense, query_pyramid, tracking), match_pyramid,
                                 pose_match_query)
        if not (forward.success and backward.success):
            return None
        pose_forward, pose_backward = invert(forward.pose_current_keyframe), backward.pose_current_keyframe
        if not (self._agree(pose_forward, pose_backward, scene_depth)
                and self._agree(pose_match_query, pose_forward, scene_depth)):
            return None
        adjoint = se3_adjoint(forward.pose_current_keyframe)
        try:
            information_forward = np.linalg.inv(adjoint @ forward.covariance @ adjoint.T).astype(np.float64)
            information_backward = np.linalg.inv(backward.covariance).astype(np.float64)
        except np.linalg.LinAlgError:
            return None
        return _information_weighted_mean(pose_forward, information_forward, pose_backward, information_backward)

    def _solve_pnp(self, query: _Entry, match: _Entry) -> _PnpSolution | None:
        """``T_query_match`` from ORB ratio-test matches and PnP-RANSAC on the match's 3D points.

        None when the inlier thresholds are not met.
        """
        cfg = self.config
        if query.descriptors.shape[0] < cfg.min_inliers or match.descriptors.shape[0] < 2:
            return None
        distance, nearest = cv2.batchDistance(
            query.descriptors, match.descriptors, -1, normType=cv2.NORM_HAMMING, K=2
        )
        good = distance[:, 0] < cfg.match_ratio * distance[:, 1]
        query_index, match_index = np.flatnonzero(good), nearest[good, 0]
        has_depth = np.all(np.isfinite(match.points[match_index]), axis=1)
        query_index, match_index = query_index[has_depth], match_index[has_depth]
        if query_index.size < cfg.min_inliers:
            return None
        object_points, image_points = match.points[match_index], query.keypoints[query_index]
        k = query.intrinsics
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            object_points, image_points, k.matrix, None, iterationsCount=cfg.ransac_iterations,
            reprojectionError=cfg.ransac_reprojection_px, confidence=0.999, flags=cv2.SOLVEPNP_EPNP,
        )
        if not ok or inliers is None or inliers.shape[0] < cfg.min_inliers:
            return None
        inliers = inliers.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(object_points[inliers], image_points[inliers], k.matrix, None, rvec, tvec)
        inlier_mask = self._reprojection_error(object_points, image_points, k, rvec, tvec) < cfg.ransac_reprojection_px
        count = int(inlier_mask.sum())
        ratio = count / float(query_index.size)
        if count < cfg.min_inliers or ratio < cfg.min_inlier_ratio:
            return None
        # Final fit on the tightest matches only: loose RANSAC inliers include near-misses from
        # repeated texture that bias the pose along its weakly observed direction.
        tight = self._reprojection_error(object_points, image_points, k, rvec, tvec) < cfg.refine_reprojection_px
        if int(tight.sum()) >= cfg.min_inliers:
            inlier_mask = tight
            rvec, tvec = cv2.solvePnPRefineLM(object_points[tight], image_points[tight], k.matrix, None, rvec, tvec)
        pose = make_pose(cv2.Rodrigues(rvec)[0], tvec.ravel())
        points_match = object_points[inlier_mask].astype(np.float64)
        points_query = points_match @ pose[:3, :3].T + pose[:3, 3]
        # A depth error of the match's point moves it along its viewing ray from the match camera.
        rays_query = (points_match / points_match[:, 2:3]) @ pose[:3, :3].T
        information = pnp_information(points_query, k, cfg.pixel_sigma, rays_query,
                                      match.depth_std[match_index[inlier_mask]])
        return _PnpSolution(pose, information, count, ratio, float(np.median(points_query[:, 2])))

    @staticmethod
    def _reprojection_error(
        points: NDArray[np.float32], pixels: NDArray[np.float32], k: Intrinsics, rvec: ArrayLike, tvec: ArrayLike,
    ) -> NDArray[np.float64]:
        """Pixel distance (N,) between ``pixels`` (N, 2) and the projections of ``points`` (N, 3); inf behind."""
        projected, _ = cv2.projectPoints(points, np.asarray(rvec, np.float64), np.asarray(tvec, np.float64), k.matrix,
                                         None)
        error = np.linalg.norm(projected.reshape(-1, 2) - pixels, axis=1)
        camera_z = (points @ cv2.Rodrigues(np.asarray(rvec))[0].T + np.asarray(tvec).reshape(1, 3))[:, 2]
        return np.where(camera_z > 0, error, np.inf)

    def _drop_redundant(self) -> None:
        """Drop the stored keyframe most similar to its predecessor (outside the recent window)."""
        candidates = len(self._entries) - self.config.recent_keyframes_excluded
        neighbour_similarity = np.sum(self._thumbnails[1:candidates] * self._thumbnails[: candidates - 1], axis=1)
        victim = 1 + int(np.argmax(neighbour_similarity))
        del self._entries[victim]
        self._thumbnails = np.delete(self._thumbnails, victim, axis=0)


