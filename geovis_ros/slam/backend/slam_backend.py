"""The keyframe back end: a pose graph over keyframes, optimised when a loop is found.

:class:`SlamBackend` turns keyframes into a pose graph (odometry edges between consecutive
keyframes, robust loop edges from :class:`~geovis_ros.slam.backend.loop_detection.LoopDetector`),
optimises it when a loop is found, and keeps the bounded
:class:`~geovis_ros.slam.backend.mapping.KeyframeMap` consistent with the optimised poses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.frame import PointCloud
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import invert, rotation_angle, se3_adjoint, se3_log
from geovis_ros.slam.backend.loop_detection import LoopClosure, LoopClosureConfig, LoopClosureConfigError, LoopDetector
from geovis_ros.slam.backend.mapping import CloudConfig, KeyframeMap, KeyframeMapConfig, depth_to_cloud
from geovis_ros.slam.backend.pose_graph import (
    OptimizationReport,
    PoseGraph,
    PoseGraphConfig,
    PoseGraphEdge,
    RobustKernel,
    nearest_rigid,
)


@dataclass(frozen=True)
class BackendConfig:
    """Keyframe back end: map, loop closure and pose-graph settings.

    Attributes:
        map: keyframe cloud store and fused voxel map.
        keyframe_cloud: which keyframe depth pixels become map points: within 10 % relative std, or
            the better part relative to the keyframe's own median (an unfused network depth that
            claims 40 % everywhere, as with the features odometry on real images, still maps).
        loop: retrieval / verification settings; None disables loop closure.
        pose_graph: optimiser settings.
        loop_kernel: robust kernel on loop edges. Huber by default: its influence is bounded, so
            a wrong loop that slipped through verification cannot drag the graph far, yet it
            never rejects a correct loop outright. A redescending kernel (Cauchy) rejects any
            loop whose correction the odometry covariances call implausible, which happens with
            correct loops whenever tracking covariances are optimistic about drift.
        odometry_sigma: (metres, radians) standard deviations added to every odometry edge
            (a floor, so that a near-zero tracking covariance cannot make an edge rigid).
        odometry_drift: (metres per metre, radians per metre) odometry-edge standard deviation
            growth with the distance between keyframes, added to every odometry edge (alone
            when tracking gives no covariance). Tracking covariances only account for image
            noise; the drift that loop closure corrects comes mostly from correlated errors
            (keyframe depth, scale) and is several times larger, so without this term the graph
            trusts the odometry chain too much and closes only part of a loop.
        odometry_rotation_drift: (radians per radian) odometry-edge rotation standard deviation
            growth with the rotation between keyframes, added like ``odometry_drift``.
        loop_gate_chi2: consistency gate on verified loops: a loop whose relative pose differs
            from the current estimate of the odometry chain between its two keyframes by a
            Mahalanobis distance squared above this (6 degrees of freedom; 22.46 is the 99.9 %
            chi-square quantile) is rejected before it enters the graph. Repeated texture can
            make a wrong place pass PnP verification; such a loop claims a correction that the
            drift accumulated between the keyframes cannot explain. None disables the gate.
        max_graph_keyframes: the pose graph (and the odometry chain kept for the loop gate) holds
            at most this many keyframes; beyond, the oldest is dropped (the next becomes the
            fixed gauge node) and loops back to it are no longer closed. Bounds the back end's
            memory (about 3 KB per keyframe, plus the loop database's own bound) and the
            optimiser's time on a robot that runs for hours.
        loop_gate_drift: (metres per metre, radians per metre) standard deviation of drift per
            metre of path travelled between the loop's keyframes, added (in quadrature with
            ``odometry_sigma``) to the chain covariance in the gate: a floor that keeps real
            loops acceptable when tracking covariances are optimistic about drift.

    """

    map: KeyframeMapConfig = KeyframeMapConfig()
    keyframe_cloud: CloudConfig = CloudConfig(stride=2, std_over_median=1.5)
    loop: LoopClosureConfig | None = LoopClosureConfig()
    pose_graph: PoseGraphConfig = PoseGraphConfig()
    loop_kernel: RobustKernel = RobustKernel("huber", 3.0)
    odometry_sigma: tuple[float, float] = (0.002, 0.002)
    odometry_drift: tuple[float, float] = (0.02, 0.01)
    odometry_rotation_drift: float = 0.05
    loop_gate_chi2: float | None = 22.46
    loop_gate_drift: tuple[float, float] = (0.05, 0.05)
    max_graph_keyframes: int = 5000

    def __post_init__(self) -> None:
        if self.max_graph_keyframes < 2:
            raise LoopClosureConfigError(
                f"BackendConfig.max_graph_keyframes must be >= 2, got {self.max_graph_keyframes}")
        if self.loop_gate_chi2 is not None and not self.loop_gate_chi2 > 0:
            raise LoopClosureConfigError(f"BackendConfig.loop_gate_chi2 must be > 0 or None, got {self.loop_gate_chi2}")
        if min(self.loop_gate_drift) < 0:
            raise LoopClosureConfigError(f"BackendConfig.loop_gate_drift must be >= 0, got {self.loop_gate_drift}")
        if min(self.odometry_drift) < 0 or self.odometry_rotation_drift < 0:
            raise LoopClosureConfigError(
                f"BackendConfig.odometry_drift and odometry_rotation_drift must be >= 0, got {self.odometry_drift} "
                f"and {self.odometry_rotation_drift}")


@dataclass(frozen=True)
class BackendUpdate:
    """What :meth:`SlamBackend.add_keyframe` did.

    Loops added, the optimisation they triggered, and verified loops that the consistency gate
    rejected (see :attr:`BackendConfig.loop_gate_chi2`).
    """

    loops: tuple[LoopClosure, ...] = ()
    optimization: OptimizationReport | None = None
    rejected_loops: tuple[LoopClosure, ...] = ()


@dataclass
class SlamBackend:
    """Keyframes in, optimised keyframe poses and a bounded fused map out.

    Odometry poses (``T_odom_keyframe`` from tracking) are kept as given; the back end estimates
    corrected poses ``T_map_keyframe`` in a frame that coincides with ``odom`` at the first
    keyframe. :meth:`correct` maps any tracked pose to the corrected frame and
    :meth:`correction` gives ``T_map_odom`` for the latest keyframe (the ROS ``map -> odom``
    transform). The map is expressed in the corrected frame.
    """

    config: BackendConfig = field(default_factory=BackendConfig)

    def __post_init__(self) -> None:
        """Build the graph, detector and map from the config."""
        self.graph = PoseGraph(self.config.pose_graph)
        self.detector = LoopDetector(self.config.loop) if self.config.loop is not None else None
        self.map = KeyframeMap(self.config.map)
        self._odometry_poses: dict[int, NDArray[np.float64]] = {}
        # Per keyframe, in insertion order: the odometry edge arriving at it, as (T_previous_keyframe,
        # covariance (6, 6) of its right perturbation in the keyframe frame); the first has none.
        self._odometry_edges: dict[int, tuple[NDArray[np.float64], NDArray[np.float64]] | None] = {}
        self._last_keyframe: int | None = None
        self._keyframes_added = 0

    def reset(self) -> None:
        """Forget everything (new session)."""
        self.__post_init__()

    @property
    def keyframe_count(self) -> int:
        """Keyframes added since the last reset (also those dropped from the graph since)."""
        return self._keyframes_added

    def odometry_information(
        self, pose_previous_keyframe: NDArray[np.float64], covariance: NDArray[np.float64] | None
    ) -> NDArray[np.float64]:
        """Information (6, 6) of the odometry edge ``previous -> keyframe`` for the pose graph.

        The covariance is the tracking covariance (when given) plus the config's drift model:
        per axis ``odometry_sigma + odometry_drift x distance`` (translation) and
        ``odometry_sigma + odometry_drift x distance + odometry_rotation_drift x angle`` (rotation).

        Args:
            pose_previous_keyframe: (4, 4) ``T_previous_keyframe``.
            covariance: (6, 6) covariance of that relative pose as tracking reports it (twist
                (v, w) of a left perturbation in the previous keyframe's frame,
                :attr:`geovis_ros.slam.frontend.keyframes.Keyframe.relative_covariance`), or None for
                the drift model alone.

        Returns:
            The inverse covariance in the graph's convention (right perturbation, keyframe frame).

        """
        cfg = self.config
        distance = float(np.linalg.norm(pose_previous_keyframe[:3, 3]))
        angle = rotation_angle(pose_previous_keyframe[:3, :3])
        sigma_t = cfg.odometry_sigma[0] + cfg.odometry_drift[0] * distance
        sigma_r = cfg.odometry_sigma[1] + cfg.odometry_drift[1] * distance + cfg.odometry_rotation_drift * angle
        drift = np.diag([sigma_t**2] * 3 + [sigma_r**2] * 3)
        if covariance is None:
            return np.linalg.inv(drift)
        covariance = np.asarray(covariance, dtype=np.float64)
        if covariance.shape != (6, 6) or not np.all(np.isfinite(covariance)):
            raise ValueError(f"relative covariance must be a finite 6x6 matrix, got shape {covariance.shape}")
        # A left perturbation exp(d) T equals the right perturbation T exp(Ad(T^-1) d).
        adjoint = se3_adjoint(invert(pose_previous_keyframe))
        right = adjoint @ (0.5 * (covariance + covariance.T)) @ adjoint.T
        information = np.linalg.inv(right + drift)
        return 0.5 * (information + information.T)

    def add_keyframe(
        self,
        keyframe_id: int,
        pose_odom_keyframe: ArrayLike,
        rgb: NDArray[np.uint8],
        depth: NDArray[np.floating],
        depth_std: NDArray[np.floating] | None,
        intrinsics: Intrinsics,
        relative_covariance: NDArray[np.float64] | None = None,
    ) -> BackendUpdate:
        """Add a keyframe (ids increasing), detect loops, optimise when one is found, update the map.

        Args:
            keyframe_id: unique id, e.g. the tracker's keyframe id.
            pose_odom_keyframe: (4, 4) ``T_odom_keyframe`` from tracking.
            rgb: (H, W, 3) uint8 keyframe image.
            depth: (H, W) fused keyframe depth, metres, NaN where unknown.
            depth_std: (H, W) its standard deviation, metres, or None.
            intrinsics: intrinsics of the keyframe.
            relative_covariance: (6, 6) covariance of the motion since the previous keyframe,
                in the convention of :meth:`odometry_information`; None uses the drift model.

        """
        if keyframe_id in self._odometry_poses:
            raise ValueError(f"keyframe {keyframe_id} was already added")
        pose = nearest_rigid(pose_odom_keyframe)
        self._odometry_poses[keyframe_id] = pose
        self._keyframes_added += 1
        if self._last_keyframe is None:
            self.graph.add_node(keyframe_id, pose, fixed=True)
            self._odometry_edges[keyframe_id] = None
        else:
            previous = self._last_keyframe
            relative = invert(self._odometry_poses[previous]) @ pose
            self.graph.add_node(keyframe_id, self.graph.pose(previous) @ relative)
            information = self.odometry_information(relative, relative_covariance)
            self.graph.add_edge(PoseGraphEdge(previous, keyframe_id, relative, information))
            self._odometry_edges[keyframe_id] = (relative, np.asarray(np.linalg.inv(information), dtype=np.float64))
        self._last_keyframe = keyframe_id
        self._bound_graph()
        cloud = depth_to_cloud(depth, depth_std, rgb, intrinsics, self.config.keyframe_cloud)
        self.map.add_keyframe(keyframe_id, self.graph.pose(keyframe_id), cloud)
        if self.detector is None:
            return BackendUpdate()
        verified = [loop for loop in self.detector.add_keyframe(keyframe_id, rgb, depth, intrinsics, depth_std)
                    if loop.match_id in self._odometry_poses]  # not to a keyframe dropped from the graph
        consistent = [self.loop_consistency(loop) <= self._gate_threshold for loop in verified]
        loops = tuple(loop for loop, ok in zip(verified, consistent, strict=True) if ok)
        rejected = tuple(loop for loop, ok in zip(verified, consistent, strict=True) if not ok)
        if not loops:
            return BackendUpdate(rejected_loops=rejected)
        for loop in loops:
            edge = PoseGraphEdge(
                loop.match_id, loop.query_id, loop.pose_match_query, loop.information, self.config.loop_kernel
            )
            self.graph.add_edge(edge)
        report = self.graph.optimize()
        self.map.update_poses(self.graph.poses())
        return BackendUpdate(loops, report, rejected)

    def _bound_graph(self) -> None:
        """Drop the oldest keyframes beyond ``max_graph_keyframes`` from the graph and the odometry chain."""
        while len(self._odometry_poses) > self.config.max_graph_keyframes:
            oldest = next(iter(self._odometry_poses))
            del self._odometry_poses[oldest], self._odometry_edges[oldest]
            self.graph.remove_node(oldest)
            self._odometry_edges[next(iter(self._odometry_edges))] = None  # its edge came from the dropped one

    @property
    def _gate_threshold(self) -> float:
        return np.inf if self.config.loop_gate_chi2 is None else self.config.loop_gate_chi2

    def loop_consistency(self, loop: LoopClosure) -> float:
        """Mahalanobis distance squared of a loop's relative pose from the odometry-chain prediction.

        The prediction is ``T_match_query`` from the current graph estimate (odometry, corrected
        by earlier loops). Its covariance is the odometry edges' covariances between the two
        keyframes carried into the query frame, plus a drift floor (``odometry_sigma`` +
        ``loop_gate_drift`` x path length between the keyframes, per axis), plus the loop's own
        covariance. The error twist (v, w) is that of ``T_predicted^-1 T_loop`` in the query frame.

        Args:
            loop: a verified loop between two keyframes of this back end (query added last).

        Returns:
            The squared Mahalanobis distance (chi-square with 6 degrees of freedom for a
            consistent loop); inf when a keyframe is unknown or the covariance is singular.

        """
        if loop.match_id not in self._odometry_edges or loop.query_id not in self._odometry_edges:
            return np.inf
        ids = list(self._odometry_edges)
        first, last = sorted((ids.index(loop.match_id), ids.index(loop.query_id)))
        chain = [edge for edge in (self._odometry_edges[i] for i in ids[first + 1:last + 1]) if edge is not None]
        pose_query_keyframe = np.eye(4)  # walks back from the query keyframe along the chain
        chain_covariance = np.zeros((6, 6))
        path_length = 0.0
        for relative, covariance in reversed(chain):
            # A right perturbation d of edge i moves T_match_query by Ad(T_query_i) d in the query frame.
            adjoint = se3_adjoint(pose_query_keyframe)
            chain_covariance += adjoint @ covariance @ adjoint.T
            pose_query_keyframe = pose_query_keyframe @ invert(relative)
            path_length += float(np.linalg.norm(relative[:3, 3]))
        sigma_t = self.config.odometry_sigma[0] + self.config.loop_gate_drift[0] * path_length
        sigma_r = self.config.odometry_sigma[1] + self.config.loop_gate_drift[1] * path_length
        floor = np.diag([sigma_t**2] * 3 + [sigma_r**2] * 3)
        predicted = invert(self.graph.pose(loop.match_id)) @ self.graph.pose(loop.query_id)
        error = se3_log(invert(predicted) @ loop.pose_match_query)
        try:
            covariance = chain_covariance + floor + np.linalg.inv(loop.information)
            return float(error @ np.linalg.solve(covariance, error))
        except np.linalg.LinAlgError:
            return np.inf

    def keyframe_poses(self) -> dict[int, NDArray[np.float64]]:
        """Corrected ``T_map_keyframe`` (4, 4) of every keyframe."""
        return self.graph.poses()

    def correct(self, pose_odom_camera: ArrayLike, keyframe_id: int) -> NDArray[np.float64]:
        """Corrected pose (4, 4) of a frame tracked against keyframe ``keyframe_id``.

        ``T_map_camera = T_map_keyframe T_odom_keyframe^-1 T_odom_camera``.
        """
        if keyframe_id not in self._odometry_poses:
            raise KeyError(f"unknown keyframe {keyframe_id}")
        return self.graph.pose(keyframe_id) @ invert(self._odometry_poses[keyframe_id]) @ np.asarray(pose_odom_camera)

    def correction(self) -> NDArray[np.float64]:
        """``T_map_odom`` (4, 4) at the latest keyframe (identity before the first loop closure)."""
        if self._last_keyframe is None:
            return np.eye(4)
        return self.graph.pose(self._last_keyframe) @ invert(self._odometry_poses[self._last_keyframe])

    def map_cloud(self) -> PointCloud:
        """The fused map: xyz (N, 3) float32 metres, rgb (N, 3) uint8, in the corrected frame."""
        return self.map.cloud()

