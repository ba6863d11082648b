"""Shared fixtures of the odometry / fusion tests: small rendered sequences, exact depth, AbsRel.

No tests here; imported by test_pipeline_odometry*.py and test_pipeline_fusion*.py. Network-like
depth errors come from :mod:`geovis_ros.eval.simulated_depth`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from geovis_ros.frame import DepthResult, FlowResult, Frame
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import invert, make_pose, so3_exp
from geovis_ros.synthetic.scenes import SynthConfig, build_scene, render_sequence
from geovis_ros.synthetic.world import render_view


@dataclass(frozen=True)
class Sequence:
    """A rendered sequence: images, exact depth, poses (T_first_camera), flow to the next frame."""

    rgb: NDArray[np.uint8]  # (N, H, W, 3)
    depth: NDArray[np.float32]  # (N, H, W)
    poses: NDArray[np.float64]  # (N, 4, 4) relative to the first camera
    flow: NDArray[np.float32]  # (N, H, W, 2), NaN where invalid; last frame all NaN
    stamps_ns: NDArray[np.int64]
    intrinsics: Intrinsics

    def frame(self, index: int) -> Frame:
        return Frame(int(self.stamps_ns[index]), self.rgb[index], self.intrinsics)

    def flow_into(self, index: int) -> FlowResult | None:
        """Flow from frame index-1 to frame index (None for the first frame)."""
        if index == 0:
            return None
        return FlowResult(self.flow[index - 1], int(self.stamps_ns[index - 1]))

    def path_length(self) -> float:
        return float(np.sum(np.linalg.norm(np.diff(self.poses[:, :3, 3], axis=0), axis=1)))


@functools.cache
def rendered(scene: str = "room", trajectory: str = "handheld", frames: int = 24, width: int = 160,
             height: int = 120, seed: int = 0, moving_objects: int = 0) -> Sequence:
    """Render once per parameter set (cached for the whole test session)."""
    config = SynthConfig(scene=scene, trajectory=trajectory, frames=frames, width=width, height=height, seed=seed,
                         moving_objects=moving_objects)
    items = list(render_sequence(config, with_flow=True))
    poses = np.stack([f.pose for f in items])
    flows = []
    for f in items:
        if f.flow is None:
            flows.append(np.full((height, width, 2), np.nan, np.float32))
        else:
            flow = f.flow.copy()
            if f.flow_valid is not None:
                flow[~f.flow_valid] = np.nan
            flows.append(flow)
    return Sequence(
        rgb=np.stack([f.rgb for f in items]), depth=np.stack([f.depth for f in items]).astype(np.float32),
        poses=invert(poses[0]) @ poses, flow=np.stack(flows), stamps_ns=np.array([f.stamp_ns for f in items]),
        intrinsics=items[0].intrinsics,
    )


@functools.cache
def rendered_with_jump(frames: int = 24, jump_at: int = 10, width: int = 160, height: int = 120) -> Sequence:
    """room/handheld where, from frame ``jump_at`` on, the camera is turned 90 degrees (yaw) in place."""
    config = SynthConfig(scene="room", trajectory="handheld", frames=frames, width=width, height=height, seed=0)
    scene = build_scene(config)
    turn = make_pose(so3_exp([0.0, np.pi / 2, 0.0]), [0.0, 0.0, 0.0])  # about the camera's y (down) axis
    poses = np.stack([p @ turn if i >= jump_at else p for i, p in enumerate(scene.camera_poses)])
    views = [render_view(scene.world, i, poses[i], config.intrinsics, scene.lighting[i]) for i in range(frames)]
    stamps = np.array([1_000_000_000 + round(i * 1e9 / config.fps) for i in range(frames)], np.int64)
    return Sequence(
        rgb=np.stack([v.rgb for v in views]), depth=np.stack([v.depth for v in views]).astype(np.float32),
        poses=invert(poses[0]) @ poses, flow=np.full((frames, height, width, 2), np.nan, np.float32),
        stamps_ns=stamps, intrinsics=config.intrinsics,
    )


def exact_depth(depth: NDArray[np.float32], intrinsics: Intrinsics, relative_std: float = 0.02) -> DepthResult:
    """A DepthResult holding the exact depth with a small claimed std."""
    return DepthResult(depth, (depth * relative_std).astype(np.float32), intrinsics, is_metric=True)


def abs_rel(estimate: NDArray[np.floating], truth: NDArray[np.floating]) -> float:
    """Mean |estimate - truth| / truth over pixels where both are finite and truth > 0."""
    valid = np.isfinite(estimate) & np.isfinite(truth) & (truth > 0)
    return float(np.mean(np.abs(estimate[valid] - truth[valid]) / truth[valid]))
