"""Synthetic sequences with exact ground truth: scenes, moving objects, lighting, the public API.

``render_sequence(SynthConfig(...))`` yields :class:`~geovis_ros.data.sequence.SequenceFrame`s
with RGB, metric z-depth, the camera pose T_world_camera (OpenCV optical frame), intrinsics and,
for every frame but the last, the exact forward optical flow to the next frame and its validity
mask (visible in both frames, inside the next image, not sky).

Scenes (world frame z up, metres, floor / ground at z = 0):
- ``room``: a closed box room with furniture boxes along the walls, free-standing boxes,
  spheres, posters and ceiling lamps;
- ``corridor``: a long closed corridor with doors, pillars, cabinets, ceiling lights and pipes;
- ``street``: a street canyon (ground, sidewalks, building blocks, parked cars, poles, trees)
  under an open sky (sky pixels: NaN depth, flow invalid);
- ``tabletop``: a room with a table in the middle, cluttered with small boxes and spheres; the
  camera circles the table looking at it.

Build order (all from ``seed``, through independent random streams, so e.g. adding moving
objects does not change the camera path): textures, the scene shell and its camera space, the
camera trajectory, then furniture placed only where it keeps clear of every camera position,
then the independently moving objects (kept clear of the camera at every frame), then lighting.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.errors import GeovisError
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.synthetic.textures import PROCEDURAL_KINDS, TextureBank, build_texture_bank
from geovis_ros.synthetic.trajectories import (
    TRAJECTORY_KINDS,
    CameraSpace,
    SmoothSignals,
    camera_trajectory,
    sweep_length,
)
from geovis_ros.synthetic.world import (
    FACE_COUNT,
    Lighting,
    Material,
    Shape,
    ShapeKind,
    World,
    render_view,
    scene_flow,
    shape_pose,
    signed_distance,
)

SCENES = ("room", "corridor", "street", "tabletop")
SYNTH_START_NS = 1_000_000_000
"""Stamp of frame 0 (1 s): never 0, which ROS tools read as "no time yet"."""
MAX_MOVING_OBJECTS = 64
_PLACEMENT_ATTEMPTS = 200
_PER_KIND_TEXTURES = 4


class SynthConfigError(GeovisError, ValueError):
    """A synthetic sequence cannot be made from this configuration (message says which field)."""


@dataclass(frozen=True)
class SynthConfig:
    """What to render.

    Attributes:
        scene: one of :data:`SCENES`.
        trajectory: one of :data:`~geovis_ros.synthetic.trajectories.TRAJECTORY_KINDS`.
        frames: number of frames (>= 1).
        width, height: image size in pixels (>= 8).
        seed: random seed; the whole sequence is a deterministic function of this config.
        fps: frame rate (Hz); stamps are ``SYNTH_START_NS + round(i * 1e9 / fps)``.
        hfov_deg: horizontal field of view in degrees, (10, 170); square pixels, centred principal
            point.
        moving_objects: number of independently moving boxes / spheres.
        lighting_changes: vary exposure (gain, offset), ambient level and light direction over time.
        texture_dir: optional folder of images used as extra textures (about half the surfaces).

    """

    scene: str = "room"
    trajectory: str = "handheld"
    frames: int = 300
    width: int = 320
    height: int = 240
    seed: int = 0
    fps: float = 30.0
    hfov_deg: float = 70.0
    moving_objects: int = 0
    lighting_changes: bool = False
    texture_dir: str | None = None

    def __post_init__(self) -> None:
        if self.scene not in SCENES:
            raise SynthConfigError(f"unknown scene {self.scene!r}; expected one of {', '.join(SCENES)}")
        if self.trajectory not in TRAJECTORY_KINDS:
            raise SynthConfigError(
                f"unknown trajectory {self.trajectory!r}; expected one of {', '.join(TRAJECTORY_KINDS)}"
            )
        if self.frames < 1:
            raise SynthConfigError(f"frames must be >= 1, got {self.frames}")
        if self.width < 8 or self.height < 8:
            raise SynthConfigError(f"image size must be at least 8x8 pixels, got {self.width}x{self.height}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise SynthConfigError(f"fps must be a positive number, got {self.fps}")
        if not 10.0 < self.hfov_deg < 170.0:
            raise SynthConfigError(f"hfov_deg must be in (10, 170) degrees, got {self.hfov_deg}")
        if not 0 <= self.moving_objects <= MAX_MOVING_OBJECTS:
            raise SynthConfigError(f"moving_objects must be in [0, {MAX_MOVING_OBJECTS}], got {self.moving_objects}")
        if self.seed < 0:
            raise SynthConfigError(f"seed must be >= 0, got {self.seed}")
        if self.texture_dir is not None and not Path(self.texture_dir).is_dir():
            raise SynthConfigError(f"texture_dir {self.texture_dir} does not exist or is not a folder")

    @property
    def intrinsics(self) -> Intrinsics:
        """Pinhole intrinsics: fx = fy = (W / 2) / tan(hfov / 2), principal point at the image centre."""
        focal = (self.width / 2.0) / math.tan(math.radians(self.hfov_deg) / 2.0)
        return Intrinsics(focal, focal, (self.width - 1) / 2.0, (self.height - 1) / 2.0, self.width, self.height)


@dataclass(frozen=True)
class SynthScene:
    """Everything needed to render a configured sequence.

    Attributes:
        config: the configuration it was built from.
        world: shapes, body poses (body 0 static, then one body per moving object) and textures.
        camera_poses: (F, 4, 4) float64 T_world_camera per frame.
        space: the camera space the trajectory was confined to.
        lighting: one :class:`~geovis_ros.synthetic.world.Lighting` per frame.

    """

    config: SynthConfig
    world: World
    camera_poses: NDArray[np.float64] = field(repr=False)
    space: CameraSpace
    lighting: tuple[Lighting, ...] = field(repr=False)


@dataclass(frozen=True)
class _MoverStyle:
    """How a scene's independently moving objects look and move."""

    half_size: tuple[float, float]  # half extent / radius range, metres
    distance: tuple[float, float]  # placed this far in front of the camera at some frame, metres
    speed: tuple[float, float]  # m/s
    amplitude: tuple[float, float]  # semi-axis of the elliptic path, metres
    low: tuple[float, float, float]  # box their whole extent stays inside
    high: tuple[float, float, float]
    clearance: float  # minimum distance to the camera centre at every frame, metres


def _triple(values: ArrayLike) -> tuple[float, float, float]:
    """Three floats from an array-like of length 3."""
    x, y, z = np.asarray(values, dtype=float).reshape(3)
    return float(x), float(y), float(z)


class _SceneBuilder:
    """Collects a scene's static shapes and camera path; rejects furniture the camera would hit."""

    def __init__(self, config: SynthConfig, bank: TextureBank, layout_rng: np.random.Generator,
                 trajectory_rng: np.random.Generator, clearance: float):
        self.config = config
        self.bank = bank
        self.rng = layout_rng
        self._trajectory_rng = trajectory_rng
        self.clearance = clearance
        self.shapes: list[Shape] = []
        self.space: CameraSpace | None = None
        self.camera_poses: NDArray[np.float64] | None = None

    def sweep(self, space: CameraSpace) -> float:
        """Length (m) an elongated space must have along x for the configured trajectory."""
        return sweep_length(self.config.trajectory, space, self.config.frames, self.config.fps)

    def fly(self, space: CameraSpace) -> NDArray[np.float64]:
        """Make the camera trajectory in ``space``; returns the camera positions (F, 3)."""
        self.space = space
        self.camera_poses = camera_trajectory(
            self.config.trajectory, space, self.config.frames, self.config.fps, self._trajectory_rng
        )
        return self.camera_poses[:, :3, 3]

    def material(self, tile_m: tuple[float, float], kinds: tuple[str, ...] = PROCEDURAL_KINDS,
                 per_face: bool = False) -> Material:
        """A random material: textures of ``kinds`` (or user images), tiles of ``tile_m`` metres."""
        rng = self.rng
        count = FACE_COUNT if per_face else 1

        def pick() -> int:
            if self.bank.user_count and rng.random() < 0.5:
                return self.bank.count - self.bank.user_count + int(rng.integers(self.bank.user_count))
            kind = PROCEDURAL_KINDS.index(kinds[int(rng.integers(len(kinds)))])
            return kind * _PER_KIND_TEXTURES + int(rng.integers(_PER_KIND_TEXTURES))

        textures = [pick() for _ in range(count)]
        base_tint = rng.uniform(0.8, 1.0, 3)
        tints = tuple(_triple(base_tint * rng.uniform(0.9, 1.0)) for _ in range(FACE_COUNT))
        return Material(
            textures=tuple(textures * (FACE_COUNT // count)),
            tints=tints,
            tile_m=float(rng.uniform(*tile_m)),
            offset=(float(rng.random()), float(rng.random())),
        )

    def add(self, kind: ShapeKind, half_size: ArrayLike, pose: NDArray[np.float64], material: Material,
            hollow: bool = False) -> bool:
        """Add a static shape unless it comes within the clearance of a camera position."""
        half = _triple(half_size)
        if not hollow and self.camera_poses is not None:
            distance = signed_distance(kind, half, pose, self.camera_poses[:, :3, 3])
            if distance.min() < self.clearance:
                return False
        self.shapes.append(Shape(kind, half, pose, material, hollow=hollow))
        return True

    def box(self, center: ArrayLike, half_size: ArrayLike, material: Material, yaw: float = 0.0,
            hollow: bool = False) -> bool:
        """Add a box (see :meth:`add`)."""
        return self.add(ShapeKind.BOX, half_size, shape_pose(center, yaw), material, hollow)

    def sphere(self, center: ArrayLike, radius: float, material: Material) -> bool:
        """Add a sphere (see :meth:`add`)."""
        return self.add(ShapeKind.SPHERE, (radius, radius, radius), shape_pose(center), material)

    def wall_quad(self, center: ArrayLike, normal_yaw: float, half_size: ArrayLike, material: Material) -> bool:
        """Add a vertical quad (a poster) facing the horizontal direction ``normal_yaw`` (rad)."""
        c, s = math.cos(normal_yaw), math.sin(normal_yaw)
        rotation = np.array([[-s, 0.0, c], [c, 0.0, s], [0.0, 1.0, 0.0]])  # local x along wall, y up, z out
        width, height = np.asarray(half_size, dtype=float)[:2]
        return self.add(ShapeKind.QUAD, (width, height, 0.0), shape_pose(center, rotation=rotation), material)


# ------------------------------------------------------------------------------------- scenes


def _furnish_walls(b: _SceneBuilder, half: NDArray[np.float64], count: int, height_max: float) -> None:
    """Boxes standing against the four walls of a room centred at the origin with half extents ``half``."""
    rng = b.rng
    for _ in range(count):
        wall = int(rng.integers(4))
        axis, sign = wall // 2, 1.0 if wall % 2 else -1.0
        width, depth, height = rng.uniform(0.4, 1.8), rng.uniform(0.3, 0.8), rng.uniform(0.4, height_max)
        along = rng.uniform(-half[1 - axis] + width / 2, half[1 - axis] - width / 2)
        centre = np.zeros(3)
        centre[axis] = sign * (half[axis] - depth / 2 + 0.02)  # 2 cm into the wall: no seam
        centre[1 - axis] = along
        centre[2] = height / 2
        extents = np.zeros(3)
        extents[axis], extents[1 - axis], extents[2] = depth / 2, width / 2, height / 2
        b.box(centre, extents, b.material((0.3, 1.0)))


def _posters(b: _SceneBuilder, half: NDArray[np.float64], count: int, z_range: tuple[float, float]) -> None:
    """Pictures 1 cm in front of the walls of a room centred at the origin."""
    rng = b.rng
    for _ in range(count):
        wall = int(rng.integers(4))
        axis, sign = wall // 2, 1.0 if wall % 2 else -1.0
        size = rng.uniform(0.25, 0.8, 2)
        centre = np.zeros(3)
        centre[axis] = sign * (half[axis] - 0.01)
        centre[1 - axis] = rng.uniform(-half[1 - axis] + size[0], half[1 - axis] - size[0])
        centre[2] = rng.uniform(*z_range)
        normal = np.zeros(3)
        normal[axis] = -sign
        b.wall_quad(centre, math.atan2(normal[1], normal[0]), size, b.material((0.5, 1.5), ("shapes", "noise")))


def _room(b: _SceneBuilder) -> _MoverStyle:
    rng = b.rng
    size = np.array([rng.uniform(5.0, 8.0), rng.uniform(4.0, 6.5), rng.uniform(2.6, 3.2)])
    half = size / 2
    b.box((0.0, 0.0, half[2]), half, b.material((0.8, 2.0), per_face=True), hollow=True)
    margin = 1.1
    b.fly(CameraSpace(
        low=(-half[0] + margin, -half[1] + margin, 0.3), high=(half[0] - margin, half[1] - margin, size[2] - 0.5),
        eye_height=1.5, drive_height=0.35, walk_speed=rng.uniform(0.5, 0.9), drive_speed=rng.uniform(0.5, 0.9),
        drone_speed=rng.uniform(0.6, 1.0),
    ))
    _furnish_walls(b, half, int(rng.integers(8, 14)), 2.0)
    for _ in range(int(rng.integers(4, 9))):  # free-standing boxes (tables, crates), kept off the path
        extents = rng.uniform([0.15, 0.15, 0.2], [0.6, 0.6, 0.5])
        centre = (rng.uniform(-half[0], half[0]), rng.uniform(-half[1], half[1]), extents[2])
        b.box(centre, extents, b.material((0.3, 1.0)), yaw=rng.uniform(0, np.pi))
    for _ in range(int(rng.integers(2, 6))):
        radius = rng.uniform(0.12, 0.4)
        centre = (rng.uniform(-half[0] + radius, half[0] - radius), rng.uniform(-half[1] + radius, half[1] - radius),
                  rng.choice([radius, rng.uniform(radius, size[2] - radius)]))
        b.sphere(centre, radius, b.material((0.2, 0.6)))
    _posters(b, half, int(rng.integers(3, 8)), (1.0, size[2] - 0.6))
    for _ in range(int(rng.integers(1, 4))):  # ceiling lamps
        centre = (rng.uniform(-half[0] + 1, half[0] - 1), rng.uniform(-half[1] + 1, half[1] - 1), size[2] - 0.03)
        b.box(centre, (rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6), 0.05), b.material((0.3, 0.8)))
    return _MoverStyle((0.12, 0.35), (1.2, 3.0), (0.3, 1.2), (0.2, 0.8), (-half[0] + 0.05, -half[1] + 0.05, 0.0),
                       (half[0] - 0.05, half[1] - 0.05, size[2] - 0.05), 0.4)


def _corridor(b: _SceneBuilder) -> _MoverStyle:
    rng = b.rng
    width, height, end_margin = rng.uniform(2.0, 3.0), rng.uniform(2.5, 3.0), 3.5
    space = CameraSpace(
        low=(end_margin, -width / 2 + 0.6, 0.3), high=(end_margin + 1.0, width / 2 - 0.6, height - 0.4),
        eye_height=1.5, drive_height=0.35, walk_speed=rng.uniform(0.8, 1.3), drive_speed=rng.uniform(1.0, 2.0),
        drone_speed=rng.uniform(1.0, 2.0), along_x=True,
    )
    length = max(12.0, b.sweep(space) + 2 * end_margin)
    space = replace(space, high=(length - end_margin, width / 2 - 0.6, height - 0.4))
    b.box((length / 2, 0.0, height / 2), (length / 2, width / 2, height / 2), b.material((0.8, 2.0), per_face=True),
          hollow=True)
    b.fly(space)
    x = rng.uniform(0.3, 1.5)
    while x < length - 0.5:
        side = rng.choice([-1.0, 1.0])
        feature = rng.choice(["door", "pillar", "cabinet", "poster"])
        wall_y = side * width / 2
        if feature == "door":
            w = rng.uniform(0.45, 0.6)
            b.box((x, wall_y, 1.05), (w, 0.06, 1.05), b.material((0.5, 1.2)))
        elif feature == "pillar":
            w, depth = rng.uniform(0.15, 0.25), rng.uniform(0.1, 0.3)
            b.box((x, wall_y - side * (depth / 2 - 0.05), height / 2), (w, depth / 2 + 0.05, height / 2),
                  b.material((0.5, 1.5)))
        elif feature == "cabinet":
            w, depth, h = rng.uniform(0.3, 0.8), rng.uniform(0.25, 0.45), rng.uniform(0.8, 1.8)
            b.box((x, wall_y - side * (depth / 2 - 0.02), h / 2), (w, depth / 2 + 0.02, h / 2),
                  b.material((0.3, 1.0)))
        else:
            size = rng.uniform(0.25, 0.6, 2)
            b.wall_quad((x, wall_y - side * 0.01, rng.uniform(1.2, height - 0.7)), math.atan2(-side, 0.0), size,
                        b.material((0.5, 1.5), ("shapes", "noise")))
        x += rng.uniform(1.2, 3.5)
    for x in np.arange(rng.uniform(1.0, 2.5), length - 0.5, rng.uniform(2.0, 3.0)):  # ceiling lights
        b.box((x, 0.0, height - 0.02), (0.6, 0.15, 0.04), b.material((0.3, 0.8)))
    pipe_y = rng.uniform(-width / 2 + 0.2, width / 2 - 0.2)
    b.box((length / 2, pipe_y, height - 0.15), (length / 2, 0.05, 0.05), b.material((0.3, 0.8), ("stripes",)))
    return _MoverStyle((0.1, 0.3), (1.5, 4.0), (0.3, 1.5), (0.2, 0.6), (0.05, -width / 2 + 0.05, 0.0),
                       (length - 0.05, width / 2 - 0.05, height - 0.05), 0.4)


def _street(b: _SceneBuilder) -> _MoverStyle:
    rng = b.rng
    road_half, sidewalk, end_margin = rng.uniform(3.5, 5.0), rng.uniform(2.0, 3.5), 25.0
    lane = road_half - 2.5
    space = CameraSpace(
        low=(end_margin, -lane, 1.2), high=(end_margin + 1.0, lane, 12.0), eye_height=1.6, drive_height=1.5,
        walk_speed=rng.uniform(1.2, 1.6), drive_speed=rng.uniform(7.0, 12.0), drone_speed=rng.uniform(4.0, 8.0),
        along_x=True,
    )
    length = max(60.0, b.sweep(space) + 2 * end_margin)
    space = replace(space, high=(length - end_margin, lane, 12.0))
    b.fly(space)
    extent = length / 2 + 400.0
    b.box((length / 2, 0.0, -0.5), (extent, extent, 0.5), b.material((2.0, 5.0), ("noise", "bricks", "checker")))
    block_start = road_half + sidewalk
    for side in (-1.0, 1.0):
        b.box((length / 2, side * (road_half + sidewalk / 2), 0.075), (length / 2 + 80.0, sidewalk / 2, 0.075),
              b.material((1.0, 2.5), ("bricks", "checker", "noise")))
        x = -80.0 + rng.uniform(0, 5)
        while x < length + 80.0:  # building blocks, with the odd alley between them
            w, depth, h = rng.uniform(6.0, 18.0), rng.uniform(8.0, 15.0), rng.uniform(6.0, 25.0)
            front = block_start + rng.uniform(0.0, 1.0)
            b.box((x + w / 2, side * (front + depth / 2), h / 2), (w / 2, depth / 2, h / 2),
                  b.material((3.0, 8.0), ("bricks", "checker", "stripes", "noise"), per_face=True))
            x += w + (rng.uniform(2.0, 5.0) if rng.random() < 0.15 else 0.0)
        x = rng.uniform(-10.0, 0.0)
        while x < length + 10.0:  # parked cars along the curb
            if rng.random() < 0.5:
                car = np.array([rng.uniform(1.9, 2.4), rng.uniform(0.85, 0.95), rng.uniform(0.65, 0.8)])
                b.box((x, side * (road_half - 1.0), car[2] + 0.15), car, b.material((0.5, 1.5), per_face=True))
                b.box((x - 0.3, side * (road_half - 1.0), 2 * car[2] + 0.15 + 0.25), (1.1, car[1] * 0.9, 0.25),
                      b.material((0.5, 1.5)))
            x += rng.uniform(5.0, 7.0)
        x = rng.uniform(0.0, 10.0)
        while x < length + 10.0:  # street lights and trees on the sidewalk
            y = side * (road_half + 0.6)
            if rng.random() < 0.5:
                b.box((x, y, 2.5), (0.08, 0.08, 2.5), b.material((0.5, 1.0), ("stripes", "noise")))
                b.sphere((x, y, 5.2), 0.25, b.material((0.3, 0.6)))
            else:
                b.box((x, y, 1.6), (0.15, 0.15, 1.6), b.material((0.5, 1.0), ("noise", "stripes")))
                canopy = b.material((0.5, 1.5), ("noise", "shapes"))
                b.sphere((x, y, rng.uniform(4.0, 5.0)), rng.uniform(1.2, 2.0), canopy)
            x += rng.uniform(8.0, 15.0)
    return _MoverStyle((0.3, 1.0), (8.0, 20.0), (2.0, 8.0), (1.0, 4.0), (-20.0, -road_half, 0.0),
                       (length + 20.0, road_half, 6.0), 1.5)


def _tabletop(b: _SceneBuilder) -> _MoverStyle:
    rng = b.rng
    size = np.array([rng.uniform(4.0, 5.5), rng.uniform(4.0, 5.5), rng.uniform(2.6, 3.0)])
    half = size / 2
    b.box((0.0, 0.0, half[2]), half, b.material((0.8, 2.0), per_face=True), hollow=True)
    top = rng.uniform(0.72, 0.78)
    orbit = rng.uniform(1.0, 1.35)
    positions = b.fly(CameraSpace(
        low=(-orbit, -orbit, top + 0.2), high=(orbit, orbit, min(top + 1.0, size[2] - 0.4)),
        eye_height=top + 0.5, drive_height=top + 0.2, walk_speed=rng.uniform(0.3, 0.6),
        drive_speed=rng.uniform(0.3, 0.5), drone_speed=rng.uniform(0.4, 0.8), focus=(0.0, 0.0, top + 0.05),
    ))
    reach = float(np.hypot(positions[:, 0], positions[:, 1]).min())
    table_x = float(np.clip((reach - b.clearance - 0.05) / math.sqrt(2), 0.25, 0.7))
    table = np.array([table_x, table_x * rng.uniform(0.7, 1.0)])
    b.box((0.0, 0.0, top - 0.02), (table[0], table[1], 0.02), b.material((0.4, 1.0), ("noise", "checker", "bricks")))
    leg_material = b.material((0.3, 0.6))
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.box((sx * (table[0] - 0.05), sy * (table[1] - 0.05), (top - 0.04) / 2), (0.025, 0.025, (top - 0.04) / 2),
                  leg_material)
    for _ in range(int(rng.integers(12, 26))):  # the clutter
        x, y = rng.uniform(-table[0] + 0.05, table[0] - 0.05), rng.uniform(-table[1] + 0.05, table[1] - 0.05)
        if rng.random() < 0.6:
            extents = rng.uniform([0.02, 0.02, 0.015], [0.1, 0.1, 0.12])
            b.box((x, y, top + extents[2]), extents, b.material((0.1, 0.4)), yaw=rng.uniform(0, np.pi))
        else:
            radius = rng.uniform(0.02, 0.08)
            b.sphere((x, y, top + radius), radius, b.material((0.08, 0.3)))
    _furnish_walls(b, half, int(rng.integers(4, 8)), 1.8)
    _posters(b, half, int(rng.integers(2, 6)), (1.0, size[2] - 0.6))
    return _MoverStyle((0.03, 0.08), (0.5, 1.0), (0.1, 0.4), (0.05, 0.2), (-table[0], -table[1], top),
                       (table[0], table[1], top + 0.4), 0.25)


_SCENE_BUILDERS = {"room": _room, "corridor": _corridor, "street": _street, "tabletop": _tabletop}
_CLEARANCE_M = {"room": 0.35, "corridor": 0.35, "street": 0.8, "tabletop": 0.3}


# ---------------------------------------------------------------------------- moving objects


def _mover_poses(
    rng: np.random.Generator, style: _MoverStyle, camera_poses: NDArray[np.float64], fps: float, radius: float
) -> NDArray[np.float64]:
    """(F, 4, 4) T_world_body of one object on an elliptic path with a constant spin.

    The ellipse is centred in front of the camera at a random frame, moved inside ``style``'s
    box so the whole object (bounding ``radius``) stays in it where the box is large enough.
    """
    frames = len(camera_poses)
    times = np.arange(frames) / fps
    amplitude = rng.uniform(*style.amplitude)
    low, high = np.asarray(style.low) + radius + amplitude, np.asarray(style.high) - radius - amplitude
    anchor = camera_poses[int(rng.integers(frames))]
    centre = anchor[:3, 3] + anchor[:3, 2] * rng.uniform(*style.distance)
    centre = np.where(low <= high, np.clip(centre, low, high), (low + high) / 2)  # box too small: its middle
    axes = np.linalg.qr(rng.normal(size=(3, 2)))[0].T  # two orthonormal directions
    angular = rng.uniform(*style.speed) / amplitude * rng.choice([-1.0, 1.0])
    angle = angular * times + rng.uniform(0, 2 * np.pi)
    path = centre + amplitude * (np.cos(angle)[:, None] * axes[0] + np.sin(angle)[:, None] * axes[1])
    spin_axis = rng.normal(size=3)
    spin_axis /= np.linalg.norm(spin_axis)
    spin = rng.uniform(0.3, 2.0) * times
    k = np.array([[0, -spin_axis[2], spin_axis[1]], [spin_axis[2], 0, -spin_axis[0]], [-spin_axis[1], spin_axis[0], 0]])
    rotations = np.eye(3) + np.sin(spin)[:, None, None] * k + (1 - np.cos(spin))[:, None, None] * (k @ k)
    poses = np.zeros((frames, 4, 4))
    poses[:, :3, :3] = rotations
    poses[:, :3, 3] = path
    poses[:, 3, 3] = 1.0
    return poses


def _add_movers(
    b: _SceneBuilder, style: _MoverStyle, count: int, rng: np.random.Generator
) -> list[NDArray[np.float64]]:
    """Append ``count`` moving shapes (bodies 1..count) to ``b.shapes``; returns their body poses."""
    assert b.camera_poses is not None
    cameras = b.camera_poses[:, :3, 3]
    bodies: list[NDArray[np.float64]] = []
    for index in range(count):
        for _ in range(_PLACEMENT_ATTEMPTS):
            if rng.random() < 0.5:
                kind, half = ShapeKind.BOX, _triple(rng.uniform(*style.half_size, 3))
            else:
                kind, half = ShapeKind.SPHERE, _triple(np.full(3, rng.uniform(*style.half_size)))
            material = b.material((0.1, 0.5))
            shape = Shape(kind, half, np.eye(4), material, body=len(bodies) + 1)
            poses = _mover_poses(rng, style, b.camera_poses, b.config.fps, shape.bounding_radius)
            if signed_distance(kind, half, poses, cameras).min() >= style.clearance:
                break
        else:
            raise SynthConfigError(
                f"could not place moving object {index + 1} of {count} clear of the camera in the "
                f"{b.config.scene} scene; use fewer moving objects or another seed"
            )
        b.shapes.append(shape)
        bodies.append(poses)
    return bodies


# -------------------------------------------------------------------------------- lighting


def _lighting(config: SynthConfig, rng: np.random.Generator) -> tuple[Lighting, ...]:
    """Per-frame lighting: fixed unless ``lighting_changes`` (then smooth exposure / light drift)."""
    azimuth, elevation = rng.uniform(-np.pi, np.pi), rng.uniform(0.6, 1.2)
    if not config.lighting_changes:
        direction = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                     math.sin(elevation))
        return (Lighting(direction=direction),) * config.frames
    signals = SmoothSignals(rng, np.arange(config.frames) / config.fps, None)
    base = Lighting()
    gain = base.gain * (1.0 + 0.3 * signals.smooth((2.0, 8.0)))
    offset = base.offset + 0.04 * signals.smooth((3.0, 9.0))
    ambient = base.ambient + 0.1 * signals.smooth((4.0, 10.0))
    az = azimuth + 0.6 * signals.smooth((6.0, 15.0))
    el = elevation + 0.2 * signals.smooth((6.0, 15.0))
    return tuple(
        Lighting(direction=(math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)),
                 ambient=float(amb), gain=float(g), offset=float(o))
        for a, e, amb, g, o in zip(az, el, ambient, gain, offset, strict=True)
    )


# ------------------------------------------------------------------------------- public API

_STREAMS = 5  # independent random streams: textures, layout, trajectory, moving objects, lighting


@functools.lru_cache(maxsize=4)
def _procedural_bank(seed: int) -> TextureBank:
    """The procedural texture bank of ``seed`` (first random stream), cached: it is immutable."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(_STREAMS)[0])
    return build_texture_bank(rng, _PER_KIND_TEXTURES)


def build_scene(config: SynthConfig) -> SynthScene:
    """Build the world, camera trajectory and lighting of ``config`` (deterministic from its seed).

    Raises SynthConfigError when the configuration cannot be realised (e.g. too many moving
    objects to keep clear of the camera, or an unusable texture folder).
    """
    from geovis_ros.synthetic.textures import TextureError

    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(_STREAMS)]
    layout_rng, trajectory_rng, mover_rng, light_rng = streams[1:]
    try:
        bank = (
            _procedural_bank(config.seed) if config.texture_dir is None
            else build_texture_bank(streams[0], _PER_KIND_TEXTURES, Path(config.texture_dir))
        )
    except TextureError as err:
        raise SynthConfigError(str(err)) from err
    builder = _SceneBuilder(config, bank, layout_rng, trajectory_rng, _CLEARANCE_M[config.scene])
    style = _SCENE_BUILDERS[config.scene](builder)
    assert builder.camera_poses is not None and builder.space is not None
    movers = _add_movers(builder, style, config.moving_objects, mover_rng)
    body_poses = np.stack([np.broadcast_to(np.eye(4), (config.frames, 4, 4)), *movers])
    world = World(tuple(builder.shapes), body_poses, bank, open_sky=config.scene == "street")
    return SynthScene(config, world, builder.camera_poses, builder.space, _lighting(config, light_rng))


def render_sequence(config: SynthConfig, with_flow: bool = True) -> Iterator[SequenceFrame]:
    """Render the configured sequence frame by frame (lazily; one frame in memory at a time).

    Frame i is named ``f"{i:06d}"``, stamped ``SYNTH_START_NS + round(i * 1e9 / fps)``, and has
    rgb (H, W, 3) uint8, depth (H, W) float32 metres (NaN only for sky), pose T_world_camera,
    intrinsics, and with ``with_flow`` (all frames but the last) the exact forward flow
    (H, W, 2) float32 pixels to frame i + 1 and its validity mask (H, W) bool.
    """
    scene = build_scene(config)
    intrinsics = config.intrinsics
    poses = scene.camera_poses
    for index in range(config.frames):
        view = render_view(scene.world, index, poses[index], intrinsics, scene.lighting[index])
        flow = valid = None
        if with_flow and index + 1 < config.frames:
            flow, valid = scene_flow(scene.world, index, view, poses[index + 1], intrinsics)
        yield SequenceFrame(
            name=f"{index:06d}",
            stamp_ns=SYNTH_START_NS + round(index * 1e9 / config.fps),
            rgb=view.rgb,
            intrinsics=intrinsics,
            depth=view.depth,
            pose=poses[index].copy(),
            flow=flow,
            flow_valid=valid,
        )


def bench_render(config: SynthConfig, with_flow: bool = True) -> dict[str, float | int | str]:
    """Render ``config`` once, timing it; prints and returns the figures.

    Returns:
        dict with scene, trajectory, frames, width, height, with_flow, build_s (scene and
        textures alone, measured first), total_s (wall time of the whole ``render_sequence``,
        including its own scene build), cpu_s (process CPU time of it: compare this on a busy
        machine) and frames_per_s (frames / total_s).

    """
    start = time.perf_counter()
    build_scene(config)
    build_s = time.perf_counter() - start
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in render_sequence(config, with_flow):
        pass
    total_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    result: dict[str, float | int | str] = {
        "scene": config.scene,
        "trajectory": config.trajectory,
        "frames": config.frames,
        "width": config.width,
        "height": config.height,
        "with_flow": int(with_flow),
        "build_s": round(build_s, 3),
        "total_s": round(total_s, 3),
        "cpu_s": round(cpu_s, 3),
        "frames_per_s": round(config.frames / total_s, 2),
    }
    print(
        f"synth {config.scene}/{config.trajectory} {config.frames} frames {config.width}x{config.height}"
        f"{' +flow' if with_flow else ''}: {total_s:.1f} s wall ({cpu_s:.1f} s CPU), "
        f"{result['frames_per_s']} frames/s; scene build {build_s:.2f} s"
    )
    return result
