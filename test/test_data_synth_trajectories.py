"""Camera trajectories of the synthetic world: determinism, confinement, realistic motion, loops."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from geovis_ros.geometry.se3 import rotation_angle
from geovis_ros.synthetic.scenes import SCENES, SynthConfig, build_scene
from geovis_ros.synthetic.trajectories import (
    TRAJECTORY_KINDS,
    CameraSpace,
    TrajectoryError,
    camera_rotations,
    camera_trajectory,
    sweep_length,
)

ROOM = CameraSpace(low=(-2.0, -1.5, 0.3), high=(2.0, 1.5, 2.5), eye_height=1.5, drive_height=0.4,
                   walk_speed=0.8, drive_speed=0.7, drone_speed=1.0)
STREET = CameraSpace(low=(25.0, -2.0, 1.2), high=(125.0, 2.0, 12.0), eye_height=1.6, drive_height=1.5,
                     walk_speed=1.4, drive_speed=9.0, drone_speed=6.0, along_x=True)
TABLE = CameraSpace(low=(-1.2, -1.2, 1.0), high=(1.2, 1.2, 1.7), eye_height=1.3, drive_height=1.0,
                    walk_speed=0.5, drive_speed=0.4, drone_speed=0.6, focus=(0.0, 0.0, 0.8))


def trajectory(kind: str, space: CameraSpace = ROOM, frames: int = 150, seed: int = 0) -> np.ndarray:
    return camera_trajectory(kind, space, frames, 30.0, np.random.default_rng(seed))


def step_speeds(poses: np.ndarray, fps: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-step translation speed (m/s) and rotation speed (rad/s)."""
    moves = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1) * fps
    turns = np.array([rotation_angle(a[:3, :3].T @ b[:3, :3]) for a, b in zip(poses[:-1], poses[1:], strict=True)])
    return moves, turns * fps


@pytest.mark.parametrize("space", [ROOM, STREET, TABLE], ids=["room", "street", "tabletop"])
@pytest.mark.parametrize("kind", TRAJECTORY_KINDS)
def test_every_kind_is_deterministic_valid_and_confined(kind, space):
    poses = trajectory(kind, space)
    np.testing.assert_array_equal(poses, trajectory(kind, space))
    assert poses.shape == (150, 4, 4) and np.isfinite(poses).all()
    rotations = poses[:, :3, :3]
    np.testing.assert_allclose(rotations @ np.swapaxes(rotations, 1, 2), np.broadcast_to(np.eye(3), (150, 3, 3)),
                               atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-9)
    np.testing.assert_array_equal(poses[:, 3], np.broadcast_to([0.0, 0.0, 0.0, 1.0], (150, 4)))
    positions = poses[:, :3, 3]
    assert np.all(positions >= np.array(space.low) - 1e-9) and np.all(positions <= np.array(space.high) + 1e-9)
    if kind != "standstill":
        assert not np.array_equal(poses, trajectory(kind, space, seed=1))


@pytest.mark.parametrize(
    ("kind", "space", "speed_range"),
    [("handheld", ROOM, (0.5, 1.2)), ("driving", STREET, (8.5, 9.5)), ("drone", STREET, (5.0, 8.0)),
     ("handheld", TABLE, (0.3, 0.8)), ("driving", ROOM, (0.6, 0.8))],
)
def test_moving_kinds_move_at_realistic_speeds(kind, space, speed_range):
    moves, turns = step_speeds(trajectory(kind, space))
    assert speed_range[0] < np.median(moves) < speed_range[1]
    assert turns.max() < np.radians(180)  # never more than 6 degrees between frames at 30 fps


def test_driving_keeps_height_and_heads_where_it_goes():
    poses = trajectory("driving", STREET)
    np.testing.assert_allclose(poses[:, 2, 3], STREET.drive_height, atol=0.01)
    forward = poses[:, :3, 2]
    travel = np.gradient(poses[:, :3, 3], axis=0)
    travel /= np.linalg.norm(travel, axis=1, keepdims=True)
    assert np.all(np.sum(forward[:, :2] * travel[:, :2], axis=1) > 0.99)
    assert np.all(poses[1:, 0, 3] > poses[:-1, 0, 3])  # sweeps along +x


def test_drone_changes_altitude_and_rotation_keeps_position():
    drone = trajectory("drone", STREET, frames=300)
    assert np.ptp(drone[:, 2, 3]) > 2.0
    spin = trajectory("rotation", ROOM)
    assert np.ptp(spin[:, :3, 3], axis=0).max() == 0.0
    _, turns = step_speeds(spin)
    assert np.median(turns) > np.radians(5)


def test_standstill_is_one_pose():
    poses = trajectory("standstill", TABLE)
    assert np.all(poses == poses[0])


def test_focus_spaces_look_at_the_focus():
    for kind in ("handheld", "driving", "drone", "loop"):
        poses = trajectory(kind, TABLE)
        to_focus = np.array(TABLE.focus) - poses[:, :3, 3]
        to_focus /= np.linalg.norm(to_focus, axis=1, keepdims=True)
        assert np.all(np.sum(poses[:, :3, 2] * to_focus, axis=1) > np.cos(np.radians(15)))


@pytest.mark.parametrize("space", [ROOM, STREET, TABLE], ids=["room", "street", "tabletop"])
@pytest.mark.parametrize("frames", [20, 300])
def test_loop_returns_to_its_start(space, frames):
    poses = trajectory("loop", space, frames=frames)
    moves, _ = step_speeds(poses)
    closing_step = np.linalg.norm(poses[-1, :3, 3] - poses[0, :3, 3])
    assert closing_step < 1.5 * np.median(moves) / 30.0 + 0.01
    assert rotation_angle(poses[-1, :3, :3].T @ poses[0, :3, :3]) < np.radians(5)
    assert np.median(moves) <= 1.5 * space.walk_speed + 0.05
    far = np.linalg.norm(poses[:, :3, 3] - poses[0, :3, 3], axis=1).max()
    assert far > 4 * closing_step  # it went around: a lap of n steps spans about n / pi steps


def test_camera_rotation_convention():
    rotation = camera_rotations(np.zeros(1), np.zeros(1), np.zeros(1))[0]
    np.testing.assert_allclose(rotation[:, 2], [1, 0, 0], atol=1e-12)  # optical axis along world +x
    np.testing.assert_allclose(rotation[:, 1], [0, 0, -1], atol=1e-12)  # image down = world down
    np.testing.assert_allclose(rotation[:, 0], [0, -1, 0], atol=1e-12)  # image right = world -y
    up = camera_rotations(np.zeros(1), np.full(1, 0.3), np.zeros(1))[0]
    assert up[2, 2] == pytest.approx(np.sin(0.3))


def test_sweep_length_matches_the_distance_covered():
    assert sweep_length("driving", STREET, 31, 30.0) == pytest.approx(9.0)
    assert sweep_length("loop", STREET, 30, 30.0) == pytest.approx(0.7)
    assert sweep_length("rotation", STREET, 300, 30.0) == 0.0


def test_bad_kind_and_bad_space_are_refused():
    with pytest.raises(TrajectoryError, match="unknown trajectory"):
        trajectory("moonwalk")
    with pytest.raises(TrajectoryError, match="eye_height"):
        dataclasses.replace(ROOM, eye_height=3.0)
    with pytest.raises(TrajectoryError, match="low < high"):
        dataclasses.replace(ROOM, high=(-3.0, 1.5, 2.5))
    with pytest.raises(TrajectoryError, match="walk_speed"):
        dataclasses.replace(ROOM, walk_speed=0.0)
    with pytest.raises(TrajectoryError, match="frames"):
        camera_trajectory("handheld", ROOM, 0, 30.0, np.random.default_rng(0))


@pytest.mark.parametrize("scene", SCENES)
@pytest.mark.parametrize("kind", TRAJECTORY_KINDS)
def test_scene_cameras_keep_clear_of_all_geometry(scene, kind):
    """Every camera position of every scene/trajectory is inside the scene, away from surfaces
    (moving objects included, at their pose of that frame)."""
    built = build_scene(SynthConfig(scene=scene, trajectory=kind, frames=90, width=32, height=24, moving_objects=2))
    positions = built.camera_poses[:, :3, 3]
    clearance = np.array([built.world.clearance(f, positions[f])[0] for f in range(0, 90, 3)])
    assert clearance.min() > 0.2
