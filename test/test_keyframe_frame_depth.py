"""A frame's fused depth: the keyframe's depth warped into the frame (sample_into) and fused with the network's."""

from __future__ import annotations

import numpy as np
import pytest
from test_pipeline_odometry_helpers import abs_rel, rendered

from geovis_ros.eval.metrics_depth import depth_metrics
from geovis_ros.eval.simulated_depth import network_like_depth
from geovis_ros.frame import DepthResult
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import invert
from geovis_ros.slam.frontend.config import FusionConfig, OdometryConfig, TrackingConfig
from geovis_ros.slam.frontend.keyframes import (
    FRAME_DEPTH_MAX_PIXELS,
    ActiveKeyframe,
    frame_depth_grid,
    fuse_frame_depth,
    inverse_depth_prior,
    resample_map,
)
from geovis_ros.slam.frontend.odometry import OdometryStage
from geovis_ros.slam.frontend.pyramid import ImagePyramid

TRACKING = TrackingConfig()
FUSION = FusionConfig()


def _exact_keyframe(index: int) -> ActiveKeyframe:
    """Keyframe ``index`` of the rendered room with its exact depth (1 % std) as the prior."""
    seq = rendered()
    rho, var = inverse_depth_prior(seq.depth[index], 0.01 * seq.depth[index], FUSION)
    pyramid = ImagePyramid.build(seq.rgb[index], seq.intrinsics, TRACKING)
    return ActiveKeyframe(0, int(seq.stamps_ns[index]), seq.rgb[index], pyramid, rho, var, seq.poses[index],
                          np.zeros((6, 6)), True, TRACKING, FUSION, np.random.default_rng(0))


def _reference_sample(keyframe: ActiveKeyframe, pose_frame_keyframe: np.ndarray, guess: np.ndarray,
                      rows: np.ndarray, cols: np.ndarray, iterations: int = 2) -> np.ndarray:
    """sample_into's inverse depth at (rows, cols), point by point in float64, as the docstring states it."""
    k = keyframe.pyramid.intrinsics[0]
    pose_keyframe_frame = invert(pose_frame_keyframe)
    out = []
    for row, col in zip(rows, cols, strict=True):
        rho = float(guess[row, col])
        for _ in range(iterations):
            point = pose_keyframe_frame[:3, :3] @ np.array([(col - k.cx) / k.fx, (row - k.cy) / k.fy, 1.0]) / rho \
                + pose_keyframe_frame[:3, 3]
            u, v = k.fx * point[0] / point[2] + k.cx, k.fy * point[1] / point[2] + k.cy
            c0, r0 = int(np.floor(u)), int(np.floor(v))
            a, b = u - c0, v - r0
            patch = keyframe.inverse_depth[r0:r0 + 2, c0:c0 + 2].astype(np.float64)
            sampled = (patch[0, 0] * (1 - a) * (1 - b) + patch[0, 1] * a * (1 - b) + patch[1, 0] * (1 - a) * b
                       + patch[1, 1] * a * b)
            surface = np.array([(u - k.cx) / k.fx, (v - k.cy) / k.fy, 1.0]) / sampled
            rho = 1.0 / (pose_frame_keyframe[:3, :3] @ surface + pose_frame_keyframe[:3, 3])[2]
        out.append(rho)
    return np.array(out)


def test_sample_into_follows_the_warp_point_by_point():
    seq = rendered()
    keyframe = _exact_keyframe(0)
    target = 5
    pose_frame_keyframe = invert(seq.poses[target]) @ seq.poses[0]
    guess = np.full(seq.depth[target].shape, 1.0 / np.median(seq.depth[target]), np.float32)
    rho, var = keyframe.sample_into(pose_frame_keyframe, seq.intrinsics, guess)
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(20, 100, 40), rng.integers(20, 140, 40)
    inside = np.isfinite(rho[rows, cols])
    assert np.count_nonzero(inside) >= 30
    expected = _reference_sample(keyframe, pose_frame_keyframe, guess, rows[inside], cols[inside])
    # remap interpolates with 1/32-pixel weights: agreement to that precision, exact away from edges
    relative = np.abs(rho[rows, cols][inside] - expected) / expected
    assert np.median(relative) < 1e-3 and np.all(var[rows, cols][inside] > 0)


def test_sample_into_recovers_the_frame_depth_from_an_exact_keyframe():
    seq = rendered()
    keyframe = _exact_keyframe(0)
    target = 6
    guess = np.full(seq.depth[target].shape, 1.0 / np.median(seq.depth[target]), np.float32)
    rho, var = keyframe.sample_into(invert(seq.poses[target]) @ seq.poses[0], seq.intrinsics, guess)
    valid = np.isfinite(rho)
    assert rho.dtype == np.float32 and var.dtype == np.float32
    assert np.array_equal(valid, np.isfinite(var)) and np.count_nonzero(valid) > 0.8 * rho.size
    assert abs_rel(1.0 / rho, seq.depth[target]) < 0.02
    with pytest.raises(ValueError, match="iteration"):
        keyframe.sample_into(np.eye(4), seq.intrinsics, guess, iterations=0)


def test_fused_frame_depth_weighs_keyframe_and_network_by_their_variance():
    network = np.full((4, 6), 0.5, np.float32)
    keyframe_rho = np.full((4, 6), 1.0, np.float32)
    keyframe_rho[0, 0] = np.nan  # network only
    network[1, 1] = np.nan  # keyframe only
    variance = np.full((4, 6), 0.01, np.float32)
    rho, var = fuse_frame_depth(network, variance, keyframe_rho, variance, (1.0, 0.0), FusionConfig())
    assert rho.dtype == np.float32 and var.dtype == np.float32
    assert rho[1, 1] == pytest.approx(1.0) and var[1, 1] == pytest.approx(0.01)
    # elsewhere: the network depth bias-corrected toward the keyframe, then averaged with it
    both = np.ones((4, 6), bool)
    both[0, 0] = both[1, 1] = False
    assert np.all((rho[both] > 0.5) & (rho[both] <= 1.0)) and np.all(var[both] < 0.01)
    # the network-only pixel: the corrected network depth alone (its variance grows with the correction)
    assert 0.5 < rho[0, 0] < rho[2, 3] and var[0, 0] > 0.01


def test_large_images_are_fused_on_a_grid_of_bounded_size():
    small = Intrinsics(200.0, 200.0, 159.5, 119.5, 320, 240)
    assert frame_depth_grid(small) is small
    vga = Intrinsics(400.0, 400.0, 319.5, 239.5, 640, 480)
    grid = frame_depth_grid(vga)
    assert (grid.width, grid.height) == (320, 240) and grid == vga.resized(320, 240)
    wide = frame_depth_grid(Intrinsics(900.0, 900.0, 639.5, 359.5, 1280, 720))
    assert wide.width * wide.height <= FRAME_DEPTH_MAX_PIXELS * 1.01
    assert wide.width / wide.height == pytest.approx(16 / 9, rel=0.01)


def test_resample_map_averages_down_interpolates_up_and_keeps_nan_local():
    values = np.arange(48, dtype=np.float32).reshape(6, 8)
    values[0, 0] = np.nan
    small = Intrinsics(4.0, 4.0, 1.5, 1.0, 4, 3)
    assert resample_map(values, Intrinsics(8.0, 8.0, 3.5, 2.5, 8, 6)) is values
    down = resample_map(values, small)
    assert down.shape == (3, 4) and down.dtype == np.float32
    assert np.isnan(down[0, 0]) and np.count_nonzero(np.isnan(down)) == 1
    assert down[1, 1] == pytest.approx(values[2:4, 2:4].mean())
    up = resample_map(np.ones((3, 4), np.float32), Intrinsics(8.0, 8.0, 3.5, 2.5, 8, 6))
    assert up.shape == (6, 8) and np.all(up == 1.0)


def test_fused_depth_of_a_vga_sequence_is_full_size_and_beats_the_network():
    """640x480: fused on the 320x240 grid, resized back; still clearly better than the network depth."""
    seq = rendered(frames=10, width=640, height=480)
    stage = OdometryStage(OdometryConfig())
    rng = np.random.default_rng(5)
    fused, network = [], []
    for index in range(len(seq.rgb)):
        predicted, std = network_like_depth(seq.depth[index], rng, scale_std=0.15)
        depth = DepthResult(predicted, std, seq.intrinsics)
        stage(seq.frame(index), depth)
        best = stage.frame_depth(depth)
        assert best.depth.shape == (480, 640) and best.std.shape == (480, 640)
        fused.append(depth_metrics(seq.depth[index], best.depth, 0.1, 80.0)["abs_rel"])
        network.append(depth_metrics(seq.depth[index], predicted, 0.1, 80.0)["abs_rel"])
    assert np.median(fused[4:]) < 0.8 * np.median(network[4:])
