"""Analytic scene primitives, vectorised ray casting, shading and exact scene flow.

A :class:`World` is a set of shapes (boxes, spheres, quads) attached to rigid bodies. Body 0 is
the static world; every other body moves with its own per-frame pose, so a shape's pose at frame
f is ``body_poses[body, f] @ shape.pose``. Shapes are textured in their own surface coordinates
(metres on the surface, per face), so texture moves exactly with the surface.

Rays are cast from one origin (a camera centre) along many directions; a ray's parameter is
measured in units of its direction vector. Primary camera rays use directions
``K^-1 (u, v, 1)`` rotated to the world, whose camera z component is 1, so the parameter of the
hit *is* the z-depth.

World frame: z up, metres. Camera poses are T_world_camera in the OpenCV optical frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.errors import GeovisError
from geovis_ros.geometry.camera import Intrinsics, pixel_grid
from geovis_ros.geometry.se3 import invert
from geovis_ros.synthetic.textures import TextureBank

HIT_EPSILON = 1e-4
"""Smallest ray parameter counted as a hit (rejects self-hits at the ray origin)."""
VISIBILITY_TOLERANCE = 5e-4
"""Relative slack of the visibility test: an occluder must be this fraction of the way nearer."""
_IN_VIEW_SLACK_PX = 1e-3  # rounding slack of the in-image test (a still camera keeps its border pixels)
FACE_COUNT = 6
"""Faces per shape: 2 * axis + (1 if the face looks along +axis else 0), axis in (x, y, z)."""
# Surface coordinates of a face normal to axis a use these two local axes (z stays "up" on walls).
_FACE_AXES = np.array([[1, 2], [0, 2], [0, 1]])
_SHADING_GRAZING_FLOOR = 0.05  # |cos| floor of the level-of-detail footprint at grazing angles
_SKY_HORIZON = np.array([0.86, 0.9, 0.95], dtype=np.float32)
_SKY_ZENITH = np.array([0.32, 0.52, 0.86], dtype=np.float32)


class ShapeKind(IntEnum):
    """Primitive type: box (half extents), sphere (radius), quad (half width/height, plane z = 0)."""

    BOX = 0
    SPHERE = 1
    QUAD = 2


class RenderError(GeovisError, RuntimeError):
    """The world is inconsistent with a render request (e.g. a ray escaped a closed scene)."""


@dataclass(frozen=True)
class Material:
    """Texturing of one shape.

    Attributes:
        textures: texture index per face (6,), see :data:`FACE_COUNT` for the numbering.
        tints: RGB multiplier per face (6, 3), values in [0, 1].
        tile_m: size in metres of one texture tile on the surface.
        offset: texture coordinate offset (2,) in tiles, so equal textures do not line up.

    """

    textures: tuple[int, ...]
    tints: tuple[tuple[float, float, float], ...]
    tile_m: float
    offset: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if len(self.textures) != FACE_COUNT or len(self.tints) != FACE_COUNT:
            raise ValueError(f"a material needs {FACE_COUNT} textures and tints, one per face")
        if not self.tile_m > 0:
            raise ValueError(f"tile_m must be > 0 metres, got {self.tile_m}")


@dataclass(frozen=True)
class Shape:
    """One primitive in its body's frame.

    Attributes:
        kind: the primitive type.
        half_size: (3,) metres: box half extents; sphere (r, r, r); quad (half width, half height, 0)
            of the rectangle |x| <= hx, |y| <= hy in its local plane z = 0.
        pose: (4, 4) T_body_shape.
        material: texturing.
        body: index of the rigid body the shape is attached to (0 = static world).
        hollow: the camera is meant to be inside (room shells); its clearance is measured inwards.

    """

    kind: ShapeKind
    half_size: tuple[float, float, float]
    pose: NDArray[np.float64] = field(repr=False)
    material: Material
    body: int = 0
    hollow: bool = False

    @property
    def bounding_radius(self) -> float:
        """Radius (m) of a sphere around the shape's origin that contains it."""
        return float(np.linalg.norm(self.half_size)) if self.kind != ShapeKind.SPHERE else self.half_size[0]


def shape_pose(center: ArrayLike, yaw: float = 0.0, rotation: ArrayLike | None = None) -> NDArray[np.float64]:
    """T_body_shape (4, 4) at ``center`` (3,) m, rotated by ``rotation`` (3, 3) or a yaw about +z (rad)."""
    pose = np.eye(4)
    if rotation is not None:
        pose[:3, :3] = np.asarray(rotation, dtype=np.float64)
    else:
        c, s = np.cos(yaw), np.sin(yaw)
        pose[:3, :3] = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    pose[:3, 3] = np.asarray(center, dtype=np.float64)
    return pose


@dataclass(frozen=True)
class Lighting:
    """Illumination of one frame: a directional light, ambient level and camera exposure.

    Colour = clip(gain * albedo * (ambient + (1 - ambient) * (1 + n.l) / 2) + offset, 0, 1)
    with n the surface normal facing the camera and l the unit direction towards the light
    (a "half-Lambert" term: no surface is left black).
    """

    direction: tuple[float, float, float] = (0.3, 0.2, 0.93)
    ambient: float = 0.45
    gain: float = 1.25
    offset: float = 0.0


@dataclass(frozen=True)
class World:
    """Shapes on rigid bodies, per-frame body poses, and the texture bank.

    Attributes:
        shapes: the primitives.
        body_poses: (B, F, 4, 4) float64 T_world_body for every body and frame; body 0 (static)
            is the identity at every frame.
        textures: the texture bank materials index into.
        open_sky: True if rays may miss everything (they see sky, NaN depth); False for closed
            scenes, where a missed ray is an error.

    """

    shapes: tuple[Shape, ...]
    body_poses: NDArray[np.float64] = field(repr=False)
    textures: TextureBank = field(repr=False)
    open_sky: bool = False

    def __post_init__(self) -> None:
        if self.body_poses.ndim != 4 or self.body_poses.shape[2:] != (4, 4):
            raise ValueError(f"body_poses must be (B, F, 4, 4), got {self.body_poses.shape}")
        bodies = {s.body for s in self.shapes}
        if bodies and (min(bodies) < 0 or max(bodies) >= self.body_poses.shape[0]):
            raise ValueError(f"shape bodies {sorted(bodies)} out of range for {self.body_poses.shape[0]} bodies")

    @property
    def frame_count(self) -> int:
        """Number of frames F the body poses cover."""
        return int(self.body_poses.shape[1])

    @cached_property
    def _packed(self) -> dict[str, NDArray]:
        shapes = self.shapes
        return {
            "kind": np.array([s.kind for s in shapes], dtype=np.int64),
            "half": np.array([s.half_size for s in shapes], dtype=np.float32).reshape(-1, 3),
            "pose": np.array([s.pose for s in shapes], dtype=np.float64).reshape(-1, 4, 4),
            "body": np.array([s.body for s in shapes], dtype=np.int64),
            "hollow": np.array([s.hollow for s in shapes], dtype=bool),
            "textures": np.array([s.material.textures for s in shapes], dtype=np.int64).reshape(-1, FACE_COUNT),
            "tints": np.array([s.material.tints for s in shapes], dtype=np.float32).reshape(-1, FACE_COUNT, 3),
            "tile": np.array([s.material.tile_m for s in shapes], dtype=np.float64),
            "offset": np.array([s.material.offset for s in shapes], dtype=np.float64).reshape(-1, 2),
        }

    def shape_poses(self, frame: int) -> NDArray[np.float64]:
        """(S, 4, 4) T_world_shape of every shape at ``frame``."""
        if not 0 <= frame < self.frame_count:
            raise IndexError(f"frame {frame} outside [0, {self.frame_count})")
        packed = self._packed
        return self.body_poses[packed["body"], frame] @ packed["pose"]

    def clearance(self, frame: int, points: ArrayLike) -> NDArray[np.float64]:
        """(N,) distance (m) from points (N, 3) to the nearest surface at ``frame``; < 0 inside a solid.

        For hollow shapes the distance is measured to their inside walls, negative outside them.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        poses = self.shape_poses(frame)
        packed = self._packed
        result = np.full(len(points), np.inf)
        for index in range(len(self.shapes)):
            distance = signed_distance(
                ShapeKind(int(packed["kind"][index])), packed["half"][index], poses[index], points
            )
            result = np.minimum(result, -distance if packed["hollow"][index] else distance)
        return result


def signed_distance(
    kind: ShapeKind, half_size: ArrayLike, pose: NDArray[np.float64], points: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Signed distance (N,) in metres from world points (N, 3) to a shape at world pose ``pose``.

    ``pose`` is one T_world_shape (4, 4) or one per point (N, 4, 4) (a moving shape over frames).
    Negative inside boxes and spheres; quads are infinitely thin (distance >= 0).
    """
    half = np.asarray(half_size, dtype=np.float64)
    pose = np.asarray(pose, dtype=np.float64)
    offset = np.asarray(points, dtype=np.float64) - pose[..., :3, 3]
    local = np.einsum("...ji,...j->...i", pose[..., :3, :3], offset)
    if kind == ShapeKind.SPHERE:
        return np.linalg.norm(local, axis=1) - half[0]
    if kind == ShapeKind.QUAD:
        outside = np.maximum(np.abs(local[:, :2]) - half[:2], 0.0)
        return np.sqrt((outside**2).sum(axis=1) + local[:, 2] ** 2)
    excess = np.abs(local) - half
    outside = np.linalg.norm(np.maximum(excess, 0.0), axis=1)
    return outside + np.minimum(excess.max(axis=1), 0.0)


# -------------------------------------------------------------------------------- ray casting


def _matmul(vectors: NDArray[np.floating], matrix: NDArray[np.floating]) -> NDArray[np.floating]:
    """``vectors`` (N, 3) @ ``matrix`` (3, 3) in the dtype of ``vectors``, on C-contiguous operands.

    numpy's matmul falls back to a loop ~100x slower when an operand is strided (a transpose
    or a slice of a 4x4 pose), so both operands are made contiguous first.
    """
    vectors = np.ascontiguousarray(vectors)
    return vectors @ np.ascontiguousarray(matrix, dtype=vectors.dtype)


def _intersect_box(
    origin: NDArray[np.float32], dirs: NDArray[np.float32], half: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Ray parameters (n,) of the first box hit ahead of the origin (the exit face from inside).

    ``origin`` (3,) and ``dirs`` (3, n) are in the box frame; misses give inf.
    """
    near = np.full(dirs.shape[1], -np.inf, dtype=np.float32)
    far = np.full(dirs.shape[1], np.inf, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inverse = 1.0 / dirs[axis]
            t_low = (-half[axis] - origin[axis]) * inverse
            t_high = (half[axis] - origin[axis]) * inverse
            np.maximum(near, np.minimum(t_low, t_high), out=near)
            np.minimum(far, np.maximum(t_low, t_high), out=far)
    hit = np.where(near > HIT_EPSILON, near, far)
    return np.where((far >= near) & (hit > HIT_EPSILON), hit, np.inf)


def _intersect_sphere(
    origin: NDArray[np.float32], dirs: NDArray[np.float32], half: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Ray parameters (n,) of the first sphere hit ahead of the origin (sphere frame, (3, n) dirs)."""
    a = dirs[0] * dirs[0] + dirs[1] * dirs[1] + dirs[2] * dirs[2]
    b = origin[0] * dirs[0] + origin[1] * dirs[1] + origin[2] * dirs[2]
    c = float(origin @ origin) - float(half[0]) ** 2
    discriminant = b * b - a * c
    root = np.sqrt(np.maximum(discriminant, 0.0))
    near = (-b - root) / a
    far = (-b + root) / a
    hit = np.where(near > HIT_EPSILON, near, far)
    return np.where((discriminant >= 0) & (hit > HIT_EPSILON), hit, np.inf)


def _intersect_quad(
    origin: NDArray[np.float32], dirs: NDArray[np.float32], half: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Ray parameters (n,) of hits with the rectangle |x| <= hx, |y| <= hy of the plane z = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -origin[2] / dirs[2]
    inside = (np.abs(origin[0] + t * dirs[0]) <= half[0]) & (np.abs(origin[1] + t * dirs[1]) <= half[1])
    return np.where(inside & (t > HIT_EPSILON), t, np.inf)


_INTERSECTORS = {ShapeKind.BOX: _intersect_box, ShapeKind.SPHERE: _intersect_sphere, ShapeKind.QUAD: _intersect_quad}
_BOX_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
_EMPTY_WINDOW = (np.inf, -np.inf, np.inf, -np.inf)


def screen_windows(
    world: World, frame: int, camera_pose: NDArray[np.float64], intrinsics: Intrinsics
) -> NDArray[np.float64]:
    """Conservative image-space bounds of every shape seen by a camera at ``frame``.

    Returns:
        (S, 4) float64 (u_min, u_max, v_min, v_max) in continuous pixel coordinates: every ray
        through an image position outside a shape's window misses it. Shapes entirely behind the
        camera get an empty window (min > max); shapes that straddle the camera plane (and hollow
        shells around it) get the infinite window.

    """
    packed = world._packed
    poses = world.shape_poses(frame)
    corners = _BOX_CORNERS[None] * packed["half"][:, None, :].astype(np.float64)  # (S, 8, 3) local
    world_corners = corners @ np.swapaxes(poses[:, :3, :3], 1, 2) + poses[:, None, :3, 3]
    in_camera = (world_corners - camera_pose[:3, 3]) @ camera_pose[:3, :3]
    z = in_camera[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intrinsics.fx * in_camera[..., 0] / z + intrinsics.cx
        v = intrinsics.fy * in_camera[..., 1] / z + intrinsics.cy
    margin = 1e-3  # pixels: rounding insurance for rays grazing a silhouette
    windows = np.stack([u.min(axis=1) - margin, u.max(axis=1) + margin, v.min(axis=1) - margin,
                        v.max(axis=1) + margin], axis=1)
    straddles = (z.min(axis=1) <= HIT_EPSILON) | packed["hollow"]
    windows[straddles] = (-np.inf, np.inf, -np.inf, np.inf)
    windows[z.max(axis=1) <= HIT_EPSILON] = _EMPTY_WINDOW
    return windows


def cast_rays(
    world: World,
    frame: int,
    camera_pose: NDArray[np.float64],
    intrinsics: Intrinsics,
    pixels: NDArray[np.floating],
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Nearest hit of the rays from a camera centre through image positions, at ``frame``.

    Args:
        world: the scene.
        frame: frame index selecting the body poses.
        camera_pose: (4, 4) T_world_camera of the casting camera.
        intrinsics: its pinhole intrinsics.
        pixels: (N, 2) continuous image positions (u, v) the rays pass through (any order; a
            row-major grid is fastest).

    Returns:
        depth: (N,) float32 z-depth (m, in this camera) of the nearest hit, inf on a miss.
        shape: (N,) int64 index of the shape hit, -1 on a miss.

    """
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    order = None if np.all(np.diff(pixels[:, 1]) >= 0) else np.argsort(pixels[:, 1], kind="stable")
    if order is not None:
        pixels = pixels[order]
    u, v = pixels[:, 0], pixels[:, 1]
    camera_dirs = np.stack(
        [(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy, np.ones_like(u)]
    ).astype(np.float32)  # (3, N): z = 1, so a hit's ray parameter is its z-depth
    windows = screen_windows(world, frame, camera_pose, intrinsics)
    poses = world.shape_poses(frame)
    packed = world._packed
    u_low, u_high = (u.min(), u.max()) if len(u) else (0.0, 0.0)
    best = np.full(len(u), np.inf, dtype=np.float32)
    which = np.full(len(u), -1, dtype=np.int64)
    for index in np.flatnonzero((windows[:, 0] <= windows[:, 1]) & (windows[:, 2] <= windows[:, 3])):
        u_min, u_max, v_min, v_max = windows[index]
        lo, hi = np.searchsorted(v, v_min, "left"), np.searchsorted(v, v_max, "right")
        if lo == hi:
            continue
        rays: slice | NDArray[np.int64] = slice(lo, hi)
        if u_min > u_low or u_max < u_high:
            band = u[lo:hi]
            inside = lo + np.flatnonzero((band >= u_min) & (band <= u_max))
            if inside.size == 0:
                continue
            rays = inside
        shape_rotation = poses[index, :3, :3]
        local_origin = (shape_rotation.T @ (camera_pose[:3, 3] - poses[index, :3, 3])).astype(np.float32)
        to_local = np.ascontiguousarray(shape_rotation.T @ camera_pose[:3, :3], dtype=np.float32)
        intersect = _INTERSECTORS[ShapeKind(int(packed["kind"][index]))]
        selected = camera_dirs[:, rays] if isinstance(rays, slice) else np.take(camera_dirs, rays, axis=1)
        depth = intersect(local_origin, to_local @ selected, packed["half"][index])
        current = best[rays]
        nearer = depth < current
        best[rays] = np.where(nearer, depth, current)
        which[rays] = np.where(nearer, index, which[rays])
    if order is not None:
        unsorted_best, unsorted_which = np.empty_like(best), np.empty_like(which)
        unsorted_best[order], unsorted_which[order] = best, which
        best, which = unsorted_best, unsorted_which
    return best, which


# ------------------------------------------------------------------------------------ rendering


@dataclass(frozen=True)
class RenderedView:
    """One rendered camera view (H x W pixels).

    Attributes:
        rgb: (H, W, 3) uint8 image.
        depth: (H, W) float32 z-depth in metres, NaN where the ray saw sky.
        shape: (H, W) int64 index of the shape seen, -1 for sky.
        face: (H, W) int64 face of that shape (see :data:`FACE_COUNT`), -1 for sky; texture
            coordinates are continuous within one face of one shape.
        body: (H, W) int64 rigid body of the shape seen (0 = static world), -1 for sky.
        points: (H, W, 3) float64 world points seen, NaN for sky.
        ray_dirs: (H, W, 3) float32 world ray directions K^-1 (u, v, 1) rotated to the world.

    """

    rgb: NDArray[np.uint8]
    depth: NDArray[np.float32]
    shape: NDArray[np.int64]
    face: NDArray[np.int64]
    body: NDArray[np.int64]
    points: NDArray[np.float64]
    ray_dirs: NDArray[np.float32]


def camera_rays(intrinsics: Intrinsics) -> NDArray[np.float32]:
    """(H * W, 3) float32 camera-frame ray directions K^-1 (u, v, 1), row-major over pixels."""
    grid = pixel_grid(intrinsics.height, intrinsics.width).reshape(-1, 2)
    rays = np.ones((len(grid), 3), dtype=np.float32)
    rays[:, 0] = (grid[:, 0] - intrinsics.cx) / intrinsics.fx
    rays[:, 1] = (grid[:, 1] - intrinsics.cy) / intrinsics.fy
    return rays


def _surface_frame(
    kind: int, local: NDArray[np.float32], half: NDArray[np.float32], local_dirs: NDArray[np.float32]
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]:
    """Face (N,), surface coordinates (N, 2) in metres and unit local normals (N, 3) of hit points.

    ``local`` (N, 3) are the hit points and ``local_dirs`` (N, 3) the ray directions, shape frame.
    """
    n = len(local)
    if kind == ShapeKind.QUAD:
        axis = np.full(n, 2)
        positive = local_dirs[:, 2] < 0  # the side the ray arrives from
    else:
        scaled = local / half if kind == ShapeKind.BOX else local
        axis = np.abs(scaled).argmax(axis=1)
        positive = np.take_along_axis(scaled, axis[:, None], axis=1)[:, 0] > 0
    face = 2 * axis + positive
    coords = np.take_along_axis(local, _FACE_AXES[axis], axis=1)
    if kind == ShapeKind.SPHERE:
        normal = local / half[0]
    else:
        normal = np.zeros((n, 3), dtype=np.float32)
        normal[np.arange(n), axis] = np.where(positive, 1.0, -1.0)
    return face, coords, normal


def _sky_colour(dirs: NDArray[np.float32]) -> NDArray[np.float32]:
    """(N, 3) sky colour from world ray directions (N, 3): horizon haze to zenith blue."""
    elevation = np.clip(dirs[:, 2] / np.linalg.norm(dirs, axis=1), 0.0, 1.0)
    mix = np.sqrt(elevation)[:, None]
    return _SKY_HORIZON + (_SKY_ZENITH - _SKY_HORIZON) * mix


def render_view(
    world: World, frame: int, camera_pose: NDArray[np.float64], intrinsics: Intrinsics, lighting: Lighting
) -> RenderedView:
    """Render the world at ``frame`` from camera pose T_world_camera (4, 4) with ``intrinsics``.

    Raises RenderError if a ray escapes a closed world (a hole in the scene).
    """
    h, w = intrinsics.height, intrinsics.width
    rotation = camera_pose[:3, :3]
    origin = camera_pose[:3, 3]
    dirs = _matmul(camera_rays(intrinsics), rotation.T)
    depth, shape = cast_rays(world, frame, camera_pose, intrinsics, pixel_grid(h, w).reshape(-1, 2))
    hit = shape >= 0
    if not world.open_sky and not hit.all():
        raise RenderError(f"{int((~hit).sum())} rays escaped the closed scene at frame {frame}")

    packed = world._packed
    poses = world.shape_poses(frame)
    hit_index = np.flatnonzero(hit)
    hit_shape = shape[hit_index]
    order = np.argsort(hit_shape, kind="stable")
    hit_index, hit_shape = hit_index[order], hit_shape[order]
    bounds = np.flatnonzero(np.diff(hit_shape)) + 1
    faces = np.empty(len(hit_index), dtype=np.int64)
    coords = np.empty((len(hit_index), 2), dtype=np.float32)
    normals = np.empty((len(hit_index), 3), dtype=np.float32)
    for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(hit_index)], strict=True):
        if start == stop:
            continue
        index = int(hit_shape[start])
        pixels = hit_index[start:stop]
        shape_rotation = poses[index, :3, :3]
        local_origin = (shape_rotation.T @ (origin - poses[index, :3, 3])).astype(np.float32)
        local_dirs = _matmul(dirs[pixels], shape_rotation)
        local = local_origin + depth[pixels, None] * local_dirs
        face, coord, normal = _surface_frame(int(packed["kind"][index]), local, packed["half"][index], local_dirs)
        faces[start:stop] = face
        coords[start:stop] = coord
        normals[start:stop] = _matmul(normal, shape_rotation.T)

    hit_dirs = dirs[hit_index]
    facing = np.einsum("ij,ij->i", normals, hit_dirs)
    normals *= np.where(facing > 0, -1.0, 1.0).astype(np.float32)[:, None]  # face the camera
    bank = world.textures
    tile = packed["tile"][hit_shape]
    uv = (coords / tile[:, None] + packed["offset"][hit_shape]) * bank.size
    footprint = depth[hit_index] / (
        np.sqrt(intrinsics.fx * intrinsics.fy) * np.sqrt(np.maximum(np.abs(facing), _SHADING_GRAZING_FLOOR))
    )
    lod = np.log2(np.maximum(footprint * bank.size / tile, 1e-6))
    albedo = bank.sample(packed["textures"][hit_shape, faces], uv, lod) * packed["tints"][hit_shape, faces]
    light = np.asarray(lighting.direction, dtype=np.float32)
    light /= np.linalg.norm(light)
    shade = lighting.ambient + (1.0 - lighting.ambient) * (0.5 + 0.5 * (normals @ light))

    colour = np.empty((h * w, 3), dtype=np.float32)
    colour[hit_index] = albedo * shade[:, None]
    colour[~hit] = _sky_colour(dirs[~hit])
    colour = np.clip(lighting.gain * colour + lighting.offset, 0.0, 1.0)
    rgb = (colour * 255.0 + 0.5).astype(np.uint8).reshape(h, w, 3)

    depth = np.where(hit, depth, np.nan).astype(np.float32)
    points = origin + depth[:, None].astype(np.float64) * dirs.astype(np.float64)
    body = np.where(hit, packed["body"][np.maximum(shape, 0)], -1)
    face_map = np.full(h * w, -1, dtype=np.int64)
    face_map[hit_index] = faces
    return RenderedView(
        rgb=rgb,
        depth=depth.reshape(h, w),
        shape=shape.reshape(h, w),
        face=face_map.reshape(h, w),
        body=body.reshape(h, w),
        points=points.reshape(h, w, 3),
        ray_dirs=dirs.reshape(h, w, 3),
    )


# ---------------------------------------------------------------------------------- scene flow


def scene_flow(
    world: World,
    frame: int,
    view: RenderedView,
    next_pose: NDArray[np.float64],
    intrinsics: Intrinsics,
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Exact forward optical flow from ``view`` (rendered at ``frame``) to the camera at frame + 1.

    Every surface point seen at ``frame`` is moved with its body's motion to frame + 1 and
    projected into the camera T_world_camera ``next_pose``. It is valid where it lands in front of
    that camera, inside [0, W-1] x [0, H-1] (up to 1e-3 px; where bilinear sampling is defined),
    and is not occluded there: the first hit of the ray through its image position is not nearer
    than the point by more than the relative :data:`VISIBILITY_TOLERANCE`. Sky pixels get the
    flow of a point at infinity (rotation only) and are never valid; points that end up behind
    the camera get zero flow (invalid).

    Returns:
        flow: (H, W, 2) float32 (du, dv) pixels.
        valid: (H, W) bool.

    """
    h, w = intrinsics.height, intrinsics.width
    next_frame = frame + 1
    points = view.points.reshape(-1, 3)
    body = view.body.reshape(-1)
    hit = body >= 0
    moved = points.copy()
    for index in np.unique(body[body > 0]):
        motion = world.body_poses[index, next_frame] @ invert(world.body_poses[index, frame])
        pixels = body == index
        moved[pixels] = _matmul(points[pixels], motion[:3, :3].T) + motion[:3, 3]
    # Sky: a direction, transformed by the rotation only (a point at infinity).
    sky_dirs = view.ray_dirs.reshape(-1, 3)[~hit].astype(np.float64)
    camera_rotation, camera_centre = next_pose[:3, :3], next_pose[:3, 3]
    in_camera = np.empty_like(moved)
    in_camera[hit] = _matmul(moved[hit] - camera_centre, camera_rotation)
    in_camera[~hit] = _matmul(sky_dirs, camera_rotation)

    z = in_camera[:, 2]
    in_front = z > HIT_EPSILON
    safe_z = np.where(in_front, z, 1.0)
    u = intrinsics.fx * in_camera[:, 0] / safe_z + intrinsics.cx
    v = intrinsics.fy * in_camera[:, 1] / safe_z + intrinsics.cy
    grid = pixel_grid(h, w).reshape(-1, 2).astype(np.float64)
    flow = np.where(in_front[:, None], np.stack([u, v], axis=-1) - grid, 0.0)
    slack = _IN_VIEW_SLACK_PX
    in_view = hit & in_front & (u >= -slack) & (u <= w - 1 + slack) & (v >= -slack) & (v <= h - 1 + slack)

    candidates = np.flatnonzero(in_view)
    nearest, _ = cast_rays(world, next_frame, next_pose, intrinsics, np.stack([u, v], axis=-1)[candidates])
    valid = np.zeros(h * w, dtype=bool)
    valid[candidates] = nearest >= z[candidates] * (1.0 - VISIBILITY_TOLERANCE)
    return flow.astype(np.float32).reshape(h, w, 2), valid.reshape(h, w)
