"""Per-frame clouds, the bounded voxel map, the keyframe map and PLY output."""

from __future__ import annotations

import numpy as np
import pytest

from geovis_ros.apps.ply import PlyError, read_ply, write_ply
from geovis_ros.apps.stage_benchmarks import benchmark_mapping
from geovis_ros.frame import PointCloud
from geovis_ros.geometry.camera import Intrinsics, backproject, transform_points
from geovis_ros.geometry.se3 import se3_exp
from geovis_ros.slam.backend.mapping import (
    CloudConfig,
    KeyframeMap,
    KeyframeMapConfig,
    MapConfigError,
    VoxelMap,
    VoxelMapConfig,
    depth_to_cloud,
    voxel_downsample,
    voxel_keys,
)

K = Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    depth = (1.0 + rng.random((48, 64))).astype(np.float32)
    std = (0.01 * depth).astype(np.float32)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return depth, std, rgb


def test_depth_to_cloud_backprojects_strided_confident_pixels() -> None:
    depth, std, rgb = _scene()
    depth[0, 0] = np.nan
    std[0, 4] = 0.5 * depth[0, 4]  # unconfident
    cloud = depth_to_cloud(depth, std, rgb, K, CloudConfig(stride=4, max_relative_std=0.1), frame_id="cam")
    assert cloud.frame_id == "cam" and cloud.xyz.dtype == np.float32 and cloud.rgb.dtype == np.uint8
    expected = backproject(depth, K)[::4, ::4].reshape(-1, 3)
    colours = rgb[::4, ::4].reshape(-1, 3)
    keep = np.ones(expected.shape[0], dtype=bool)
    keep[[0, 1]] = False  # (row 0, col 0) NaN and (row 0, col 4) unconfident
    np.testing.assert_allclose(cloud.xyz, expected[keep], rtol=1e-6)
    np.testing.assert_array_equal(cloud.rgb, colours[keep])


def test_depth_to_cloud_without_std_keeps_range_only() -> None:
    depth, _, rgb = _scene()
    cloud = depth_to_cloud(depth, None, rgb, K, CloudConfig(stride=1, min_depth_m=1.5))
    assert cloud.xyz.shape[0] == int(np.sum(depth >= 1.5))
    assert np.all(cloud.xyz[:, 2] >= 1.5)


def test_depth_to_cloud_rejects_bad_shapes() -> None:
    depth, std, rgb = _scene()
    with pytest.raises(ValueError, match="intrinsics"):
        depth_to_cloud(depth[:-1], std, rgb, K)
    with pytest.raises(ValueError, match="rgb"):
        depth_to_cloud(depth, std, rgb[..., 0], K)
    with pytest.raises(ValueError, match="depth_std"):
        depth_to_cloud(depth, std[:, :-1], rgb, K)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: CloudConfig(stride=0), "stride"),
        (lambda: CloudConfig(min_depth_m=5.0, max_depth_m=1.0), "min_depth_m"),
        (lambda: VoxelMapConfig(voxel_size_m=0.0), "voxel_size_m"),
        (lambda: VoxelMapConfig(max_points=0), "max_points"),
        (lambda: KeyframeMapConfig(max_keyframes=1), "max_keyframes"),
    ],
)
def test_configs_reject_bad_values(factory, message: str) -> None:
    with pytest.raises(MapConfigError, match=message):
        factory()


def test_voxel_keys_are_unique_per_voxel_and_flag_unrepresentable_points() -> None:
    points = np.array([[0.01, 0.01, 0.01], [0.04, 0.02, 0.03], [-0.01, 0.0, 0.0], [np.nan, 0, 0], [1e9, 0, 0]])
    keys, valid = voxel_keys(points, 0.05)
    assert keys[0] == keys[1] != keys[2]
    np.testing.assert_array_equal(valid, [True, True, True, False, False])


def test_voxel_downsample_averages_points_and_colours() -> None:
    xyz = np.array([[0.01, 0.0, 0.0], [0.03, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    rgb = np.array([[0, 0, 0], [100, 50, 20], [255, 255, 255]], dtype=np.uint8)
    voxels = voxel_downsample(xyz, rgb, 0.1, ticks=np.array([3, 7, 5]))
    order = np.argsort(voxels.counts)[::-1]
    np.testing.assert_allclose(voxels.xyz[order[0]], [0.02, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(voxels.rgb[order[0]], [50, 25, 10])
    np.testing.assert_array_equal(voxels.counts[order], [2, 1])
    np.testing.assert_array_equal(voxels.ticks[order], [7, 5])
    assert np.all(np.diff(voxels.keys) > 0)


def test_voxel_map_running_mean_over_updates() -> None:
    voxel_map = VoxelMap(VoxelMapConfig(voxel_size_m=1.0, max_points=10))
    voxel_map.integrate(np.array([[0.2, 0.2, 0.2]]), np.array([[0, 0, 0]], dtype=np.uint8))
    voxel_map.integrate(np.array([[0.4, 0.4, 0.4], [0.6, 0.6, 0.6], [5.5, 0.5, 0.5]]),
                        np.array([[30, 30, 30], [60, 60, 60], [9, 9, 9]], dtype=np.uint8))
    cloud = voxel_map.cloud()
    assert len(voxel_map) == 2 and cloud.frame_id == "odom"
    first = np.argmin(cloud.xyz[:, 0])
    np.testing.assert_allclose(cloud.xyz[first], [0.4, 0.4, 0.4], atol=1e-6)
    np.testing.assert_array_equal(cloud.rgb[first], [30, 30, 30])
    np.testing.assert_array_equal(np.sort(voxel_map.counts()), [1, 3])


def test_voxel_map_never_exceeds_bound_and_evicts_least_recently_seen() -> None:
    config = VoxelMapConfig(voxel_size_m=0.1, max_points=500, eviction_fraction=0.1)
    voxel_map = VoxelMap(config)
    rng = np.random.default_rng(1)
    home = rng.random((50, 3)) * 0.5  # observed every update: must survive eviction
    home_keys = set(voxel_keys(home, 0.1)[0].tolist())
    sizes = []
    for step in range(60):
        fresh = rng.random((200, 3)) * 2.0 + np.array([3.0 * step, 0.0, 0.0])
        points = np.concatenate([home, fresh])
        voxel_map.integrate(points, np.zeros((points.shape[0], 3), dtype=np.uint8))
        sizes.append(len(voxel_map))
    assert max(sizes) <= config.max_points
    assert voxel_map.evicted_total > 0
    kept_keys = set(voxel_keys(voxel_map.cloud().xyz, 0.1)[0].tolist())
    assert home_keys <= kept_keys
    # The oldest fresh blocks are gone, the newest is complete.
    assert voxel_map.cloud().xyz[:, 0].max() > 3.0 * 59
    assert voxel_map.cloud().xyz[:, 0][voxel_map.cloud().xyz[:, 0] > 1.0].min() > 3.0 * 40


def test_voxel_map_keeps_best_observed_voxels_of_an_oversized_cloud() -> None:
    voxel_map = VoxelMap(VoxelMapConfig(voxel_size_m=1.0, max_points=3))
    points = np.array([[0.5, 0, 0]] * 5 + [[1.5, 0, 0]] * 4 + [[2.5, 0, 0]] + [[3.5, 0, 0]] * 3, dtype=np.float32)
    voxel_map.integrate(points, np.zeros((points.shape[0], 3), dtype=np.uint8))
    np.testing.assert_array_equal(np.sort(np.floor(voxel_map.cloud().xyz[:, 0])), [0, 1, 3])


def test_voxel_map_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        VoxelMap().integrate(np.zeros((4, 3)), np.zeros((3, 3), dtype=np.uint8))


def _cloud_in_front(seed: int, points: int = 800) -> PointCloud:
    rng = np.random.default_rng(seed)
    xyz = np.concatenate([rng.uniform(-1, 1, (points, 2)), rng.uniform(2, 3, (points, 1))], axis=1)
    return PointCloud(xyz.astype(np.float32), rng.integers(0, 256, (points, 3), dtype=np.uint8), "camera")


def test_keyframe_map_point_counts_stay_bounded_over_many_keyframes() -> None:
    config = KeyframeMapConfig(
        map=VoxelMapConfig(voxel_size_m=0.1, max_points=1500), keyframe_voxel_size_m=0.1,
        max_points_per_keyframe=300, max_keyframes=12,
    )
    keyframe_map = KeyframeMap(config)
    for index in range(80):
        pose = se3_exp([0.3 * index, 0.0, 0.0, 0.0, 0.02 * index, 0.0])
        keyframe_map.add_keyframe(index, pose, _cloud_in_front(index))
        assert len(keyframe_map) <= config.map.max_points
        assert len(keyframe_map.keyframe_ids) <= config.max_keyframes
        assert keyframe_map.stored_points <= config.max_points_per_keyframe * config.max_keyframes
    assert keyframe_map.keyframe_ids[-1] == 79
    assert keyframe_map.voxels.evicted_total > 0


def test_keyframe_map_drops_the_most_redundant_keyframe() -> None:
    keyframe_map = KeyframeMap(KeyframeMapConfig(max_keyframes=3))
    for index, x in enumerate([0.0, 5.0, 5.01, 10.0]):
        keyframe_map.add_keyframe(index, se3_exp([x, 0, 0, 0, 0, 0]), _cloud_in_front(index, 50))
    assert keyframe_map.keyframe_ids == [0, 2, 3]


def test_keyframe_map_rebuild_moves_points_with_updated_poses() -> None:
    keyframe_map = KeyframeMap(KeyframeMapConfig(map=VoxelMapConfig(voxel_size_m=0.02), keyframe_voxel_size_m=0.02))
    cloud = _cloud_in_front(3, 400)
    keyframe_map.add_keyframe(7, np.eye(4), cloud)
    before = keyframe_map.cloud().xyz
    shift = se3_exp([1.0, -2.0, 0.5, 0.0, 0.3, 0.0])
    keyframe_map.update_poses({7: shift, 99: np.eye(4)})
    after = keyframe_map.cloud().xyz
    np.testing.assert_allclose(keyframe_map.keyframe_pose(7), shift)
    assert after.shape == before.shape
    expected = transform_points(shift, before)
    np.testing.assert_allclose(np.sort(after, axis=0), np.sort(expected, axis=0), atol=0.03)


def test_batched_rebuild_matches_one_by_one_insertion() -> None:
    config = KeyframeMapConfig(map=VoxelMapConfig(voxel_size_m=0.05, max_points=100_000), keyframe_voxel_size_m=0.02)
    keyframe_map = KeyframeMap(config)
    for index in range(40):
        keyframe_map.add_keyframe(index, se3_exp([0.05 * index, 0.0, 0.0, 0.0, 0.01 * index, 0.0]),
                                  _cloud_in_front(index, 300))
    sequential = keyframe_map.cloud()
    sequential_counts = keyframe_map.voxels.counts()
    keyframe_map.rebuild()
    rebuilt = keyframe_map.cloud()
    np.testing.assert_allclose(rebuilt.xyz, sequential.xyz, atol=1e-5)
    np.testing.assert_array_equal(keyframe_map.voxels.counts(), sequential_counts)
    assert np.max(np.abs(rebuilt.rgb.astype(int) - sequential.rgb)) <= 1


def test_rebuild_of_a_full_map_keeps_the_most_recent_keyframes() -> None:
    config = KeyframeMapConfig(map=VoxelMapConfig(voxel_size_m=0.1, max_points=400), keyframe_voxel_size_m=0.1)
    keyframe_map = KeyframeMap(config)
    for index in range(30):  # keyframes side by side along x: each sees fresh space
        keyframe_map.add_keyframe(index, se3_exp([2.5 * index, 0.0, 0.0, 0.0, 0.0, 0.0]), _cloud_in_front(index))
    keyframe_map.rebuild()
    xs = keyframe_map.cloud().xyz[:, 0]
    assert len(keyframe_map) <= 400
    assert xs.max() > 2.5 * 29 and xs.min() > 2.5 * 20


def test_ply_round_trip(tmp_path) -> None:
    cloud = _cloud_in_front(4, 100)
    path = write_ply(tmp_path / "sub" / "map.ply", PointCloud(cloud.xyz, cloud.rgb, "odom"))
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
    back = read_ply(path)
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.rgb, cloud.rgb)
    assert back.frame_id == "odom"


def test_ply_errors(tmp_path) -> None:
    with pytest.raises(PlyError, match=r"\(N, 3\)"):
        write_ply(tmp_path / "a.ply", PointCloud(np.zeros((3, 3), np.float32), np.zeros((2, 3), np.uint8), "x"))
    (tmp_path / "b.ply").write_bytes(b"not a ply")
    with pytest.raises(PlyError, match="not a PLY"):
        read_ply(tmp_path / "b.ply")


def test_benchmark_mapping_reports_bounded_map() -> None:
    config = KeyframeMapConfig(map=VoxelMapConfig(max_points=2000), max_points_per_keyframe=300, max_keyframes=10)
    result = benchmark_mapping(frames=60, width=64, height=48, keyframe_every=3, config=config)
    assert result.keyframes == 20
    assert 0 < result.map_points <= 2000
    assert result.bound_reached_at_frame is not None
    assert result.cloud_ms > 0 and result.keyframe_insert_ms > 0
