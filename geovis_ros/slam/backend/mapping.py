"""Point-cloud outputs: the per-frame cloud from confident depth and the bounded global voxel map.

- :func:`depth_to_cloud`: every ``stride``-th pixel whose depth is confident (finite, in range,
  relative standard deviation below a threshold) back-projected to xyz + rgb in the camera frame.
- :class:`VoxelMap`: points fused in a voxel hash grid (integer voxel keys -> running mean xyz,
  mean colour, observation count) with a hard capacity of ``max_points`` voxels: when full, the
  least-recently observed voxels (farthest from the current viewpoint first among equals) are
  evicted, so memory stays flat however long the run.
- :class:`KeyframeMap`: the global map as the pipeline keeps it: one downsampled cloud per
  keyframe, in the keyframe's camera frame (bounded in points per keyframe and in keyframes),
  fused into a :class:`VoxelMap` in ``odom``; after a pose-graph update the voxel map is rebuilt
  from those clouds at the new keyframe poses.

Everything is vectorised numpy; per-update cost is linear in the incoming points plus
O(voxels) bookkeeping (sorted-key index, searchsorted lookups).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.errors import GeovisError
from geovis_ros.frame import PointCloud
from geovis_ros.geometry.camera import Intrinsics, transform_points

_KEY_BITS = 21
_KEY_BIAS = 1 << (_KEY_BITS - 1)  # voxel indices in [-2^20, 2^20) per axis
REBUILD_BATCH = 16
"""Keyframe clouds fused per call when the map is rebuilt after a pose-graph update."""


class MapConfigError(GeovisError, ValueError):
    """A cloud/map parameter is out of range (the message names it)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise MapConfigError(message)


@dataclass(frozen=True)
class CloudConfig:
    """Which depth pixels become points.

    Attributes:
        stride: keep every ``stride``-th pixel in u and v (>= 1).
        max_relative_std: keep pixels with ``std / depth`` at most this (dimensionless, > 0).
        std_over_median: relative to the depth source: also keep pixels whose ``std / depth`` is at
            most this times the image's median ``std / depth`` (0: off). A network that claims
            40 % everywhere still gives its better half; a fused depth its stereo-confirmed part.
        min_depth_m: nearest depth kept, metres.
        max_depth_m: farthest depth kept, metres.

    """

    stride: int = 4
    max_relative_std: float = 0.1
    std_over_median: float = 0.0
    min_depth_m: float = 0.1
    max_depth_m: float = 30.0

    def __post_init__(self) -> None:
        _require(self.stride >= 1, f"stride must be >= 1, got {self.stride}")
        _require(self.max_relative_std > 0, f"max_relative_std must be > 0, got {self.max_relative_std}")
        _require(self.std_over_median >= 0, f"std_over_median must be >= 0, got {self.std_over_median}")
        _require(
            0 <= self.min_depth_m < self.max_depth_m,
            f"need 0 <= min_depth_m < max_depth_m, got {self.min_depth_m}, {self.max_depth_m}",
        )


def depth_to_cloud(
    depth: NDArray[np.floating],
    depth_std: NDArray[np.floating] | None,
    rgb: NDArray[np.uint8],
    intrinsics: Intrinsics,
    config: CloudConfig = CloudConfig(),
    frame_id: str = "camera",
) -> PointCloud:
    """Coloured points of the confident depth pixels, in the camera frame.

    Args:
        depth: (H, W) depth (z) in metres, NaN where invalid.
        depth_std: (H, W) standard deviation of ``depth`` in metres, or None to trust every
            finite depth (ground truth).
        rgb: (H, W, 3) uint8 image aligned with ``depth``.
        intrinsics: intrinsics of ``depth`` (W x H).
        config: subsampling stride, confidence and range thresholds.
        frame_id: frame name stored in the result.

    Returns:
        A :class:`PointCloud` with xyz (N, 3) float32 metres (OpenCV optical frame) and rgb
        (N, 3) uint8, in row-major pixel order.

    Raises:
        ValueError: shapes disagree with each other or with the intrinsics.

    """
    h, w = intrinsics.height, intrinsics.width
    if depth.shape != (h, w):
        raise ValueError(f"depth is {depth.shape[::-1]} (WxH) but the intrinsics are for {w}x{h}")
    if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be ({h}, {w}, 3) uint8 like the depth, got {rgb.shape} {rgb.dtype}")
    if depth_std is not None and depth_std.shape != (h, w):
        raise ValueError(f"depth_std shape {depth_std.shape} differs from depth shape {(h, w)}")
    s = config.stride
    z = depth[::s, ::s].astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        keep = (z >= config.min_depth_m) & (z <= config.max_depth_m)
        if depth_std is not None:
            relative = depth_std[::s, ::s] / z
            limit = config.max_relative_std
            if config.std_over_median > 0 and np.any(keep & np.isfinite(relative)):
                limit = max(limit, config.std_over_median * float(np.median(relative[keep & np.isfinite(relative)])))
            keep &= relative <= limit
    rows, cols = np.nonzero(keep)
    z_kept = z[rows, cols]
    u = (cols * s).astype(np.float32)
    v = (rows * s).astype(np.float32)
    xyz = np.empty((z_kept.size, 3), dtype=np.float32)
    xyz[:, 0] = (u - intrinsics.cx) / intrinsics.fx * z_kept
    xyz[:, 1] = (v - intrinsics.cy) / intrinsics.fy * z_kept
    xyz[:, 2] = z_kept
    return PointCloud(xyz=xyz, rgb=rgb[rows * s, cols * s], frame_id=frame_id)


def voxel_keys(xyz: NDArray[np.floating], voxel_size_m: float) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Integer voxel keys (N,) int64 of points (N, 3) in metres, and a mask (N,) of representable points.

    Each axis index ``floor(p / voxel_size_m)`` must lie in [-2^20, 2^20) (over 50 km at 5 cm
    voxels); points outside that range or non-finite get key -1 and mask False.
    """
    with np.errstate(invalid="ignore"):
        index = np.floor(np.asarray(xyz, dtype=np.float64) / voxel_size_m)
        valid = np.all((index >= -_KEY_BIAS) & (index < _KEY_BIAS), axis=1)
    biased = np.where(valid[:, None], index, 0).astype(np.int64) + _KEY_BIAS
    keys = (biased[:, 0] << (2 * _KEY_BITS)) | (biased[:, 1] << _KEY_BITS) | biased[:, 2]
    return np.where(valid, keys, -1), valid


@dataclass(frozen=True)
class VoxelAggregate:
    """Points averaged per voxel.

    Attributes:
        keys: (M,) int64 sorted unique voxel keys (see :func:`voxel_keys`).
        xyz: (M, 3) float32 mean point, metres.
        rgb: (M, 3) float32 mean colour in [0, 255].
        counts: (M,) int64 points per voxel.
        ticks: (M,) int64 largest tick of the voxel's points (0 when no ticks were given).

    """

    keys: NDArray[np.int64]
    xyz: NDArray[np.float32]
    rgb: NDArray[np.float32]
    counts: NDArray[np.int64]
    ticks: NDArray[np.int64]

    def subset(self, index: NDArray[np.intp] | NDArray[np.bool_]) -> VoxelAggregate:
        """The voxels selected by an index or mask (keys stay sorted for sorted indices)."""
        return VoxelAggregate(self.keys[index], self.xyz[index], self.rgb[index], self.counts[index],
                              self.ticks[index])


def voxel_downsample(
    xyz: NDArray[np.floating], rgb: NDArray[np.uint8], voxel_size_m: float,
    ticks: NDArray[np.integer] | None = None,
) -> VoxelAggregate:
    """Average points (N, 3) metres and colours (N, 3) uint8 per voxel of ``voxel_size_m``.

    ``ticks`` (N,) optionally tags each point with an observation time; each voxel keeps the
    latest. Non-finite or out-of-range points are dropped.
    """
    keys, valid = voxel_keys(xyz, voxel_size_m)
    keys, xyz, rgb = keys[valid], np.asarray(xyz)[valid], np.asarray(rgb)[valid]
    unique, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    channels = np.concatenate([xyz.astype(np.float64), rgb.astype(np.float64)], axis=1)
    sums = np.zeros((unique.size, 6))
    for c in range(channels.shape[1]):  # bincount per channel: far faster than np.add.at
        sums[:, c] = np.bincount(inverse, weights=channels[:, c], minlength=unique.size)
    means = sums / counts[:, None]
    voxel_ticks = np.zeros(unique.size, dtype=np.int64)
    if ticks is not None:
        np.maximum.at(voxel_ticks, inverse, np.asarray(ticks, dtype=np.int64)[valid])
    return VoxelAggregate(unique, means[:, :3].astype(np.float32), means[:, 3:].astype(np.float32), counts,
                          voxel_ticks)


@dataclass(frozen=True)
class VoxelMapConfig:
    """Size of the fused map.

    Attributes:
        voxel_size_m: edge of a voxel, metres (> 0).
        max_points: hard cap on the number of voxels (= output points), >= 1.
        eviction_fraction: when the map is full, evict this extra fraction of ``max_points``
            beyond what is needed (hysteresis, so eviction does not run on every update).

    """

    voxel_size_m: float = 0.05
    max_points: int = 200_000
    eviction_fraction: float = 0.1

    def __post_init__(self) -> None:
        _require(self.voxel_size_m > 0, f"voxel_size_m must be > 0, got {self.voxel_size_m}")
        _require(self.max_points >= 1, f"max_points must be >= 1, got {self.max_points}")
        _require(0 <= self.eviction_fraction < 1, f"eviction_fraction must be in [0, 1), got {self.eviction_fraction}")


class VoxelMap:
    """Fused coloured voxel grid with a fixed capacity (``config.max_points`` voxels).

    Storage is preallocated at construction (mean xyz float32, mean rgb float32, count int32,
    last-observed tick int64 per slot, about 40 bytes per voxel) plus a sorted key index, so
    memory does not grow after the map is full.
    """

    def __init__(self, config: VoxelMapConfig = VoxelMapConfig()) -> None:
        """Allocate a map holding at most ``config.max_points`` voxels."""
        self.config = config
        capacity = config.max_points
        self._xyz = np.zeros((capacity, 3), dtype=np.float32)
        self._rgb = np.zeros((capacity, 3), dtype=np.float32)
        self._count = np.zeros(capacity, dtype=np.int32)
        self._last_seen = np.zeros(capacity, dtype=np.int64)
        self._occupied = np.zeros(capacity, dtype=bool)
        self._sorted_keys = np.zeros(0, dtype=np.int64)  # keys of occupied slots, ascending
        self._sorted_slots = np.zeros(0, dtype=np.int64)  # slot of each sorted key
        self._tick = 0
        self.evicted_total = 0

    def __len__(self) -> int:
        """Number of occupied voxels (<= ``config.max_points``)."""
        return int(self._sorted_keys.size)

    @property
    def tick(self) -> int:
        """Observation time of the latest :meth:`integrate` (0 after :meth:`clear`)."""
        return self._tick

    def clear(self) -> None:
        """Drop every voxel (storage stays allocated)."""
        self._occupied[:] = False
        self._sorted_keys = np.zeros(0, dtype=np.int64)
        self._sorted_slots = np.zeros(0, dtype=np.int64)
        self._tick = 0

    def integrate(
        self, xyz: NDArray[np.floating], rgb: NDArray[np.uint8], viewpoint: ArrayLike | None = None,
        ticks: NDArray[np.integer] | None = None,
    ) -> None:
        """Fuse points (N, 3) metres in the map frame with colours (N, 3) uint8.

        Points falling in an existing voxel update its running means and count; new voxels take
        free slots, evicting the least-recently observed voxels (farthest from ``viewpoint``
        (3,) metres first among equals; default: the centroid of ``xyz``) when the map is full.

        Each call is one new observation time (:attr:`tick` + 1) unless ``ticks`` (N,) gives
        per-point observation times, each > :attr:`tick` (e.g. keyframe order when rebuilding from
        many keyframes in one call).
        """
        xyz = np.asarray(xyz)
        if xyz.ndim != 2 or xyz.shape[1] != 3 or np.shape(rgb) != xyz.shape:
            raise ValueError(f"xyz and rgb must both be (N, 3), got {xyz.shape} and {np.shape(rgb)}")
        if ticks is None:
            self._tick += 1
            batch = voxel_downsample(xyz, rgb, self.config.voxel_size_m)
            batch = replace(batch, ticks=np.full(batch.keys.size, self._tick, dtype=np.int64))
        else:
            ticks = np.asarray(ticks, dtype=np.int64).reshape(-1)
            if ticks.shape[0] != xyz.shape[0]:
                raise ValueError(f"ticks must have one entry per point ({xyz.shape[0]}), got {ticks.shape[0]}")
            batch = voxel_downsample(xyz, rgb, self.config.voxel_size_m, ticks)
            self._tick = max(self._tick, int(batch.ticks.max(initial=0)))
        if batch.keys.size == 0:
            return
        position = np.searchsorted(self._sorted_keys, batch.keys)
        found = position < self._sorted_keys.size
        found[found] = self._sorted_keys[position[found]] == batch.keys[found]
        self._merge_existing(self._sorted_slots[position[found]], batch.subset(found))
        new = batch.subset(~found)
        if new.keys.size == 0:
            return
        capacity = self.config.max_points
        if new.keys.size > capacity:  # more new voxels than the whole map: keep the latest, best observed
            order = np.lexsort((-new.counts, -new.ticks))[:capacity]
            new = new.subset(np.sort(order))
        overflow = len(self) + new.keys.size - capacity
        if overflow > 0:
            centre = np.mean(new.xyz, axis=0) if viewpoint is None else np.asarray(viewpoint, dtype=np.float32)
            extra = int(self.config.eviction_fraction * capacity)
            self._evict(min(overflow + extra, len(self)), centre)
        slots = np.flatnonzero(~self._occupied)[: new.keys.size]
        self._occupied[slots] = True
        self._xyz[slots], self._rgb[slots], self._count[slots] = new.xyz, new.rgb, new.counts
        self._last_seen[slots] = new.ticks
        insert_at = np.searchsorted(self._sorted_keys, new.keys)
        self._sorted_keys = np.insert(self._sorted_keys, insert_at, new.keys)
        self._sorted_slots = np.insert(self._sorted_slots, insert_at, slots)

    def _merge_existing(self, slots: NDArray[np.int64], batch: VoxelAggregate) -> None:
        """Running-mean update of occupied ``slots`` with the batch means weighted by their counts."""
        total = self._count[slots].astype(np.float32) + batch.counts
        fraction = (batch.counts / total).astype(np.float32)[:, None]
        self._xyz[slots] += fraction * (batch.xyz - self._xyz[slots])
        self._rgb[slots] += fraction * (batch.rgb - self._rgb[slots])
        self._count[slots] = np.minimum(total, np.iinfo(np.int32).max).astype(np.int32)
        self._last_seen[slots] = np.maximum(self._last_seen[slots], batch.ticks)

    def _evict(self, count: int, viewpoint: NDArray[np.floating]) -> None:
        """Free ``count`` voxels: oldest ``last_seen`` first, farthest from ``viewpoint`` among equals."""
        slots = self._sorted_slots
        ticks = self._last_seen[slots]
        cutoff = np.partition(ticks, count - 1)[count - 1]
        evict = ticks < cutoff
        # Among voxels last seen at the cutoff tick, the farthest go first.
        tied = np.flatnonzero(ticks == cutoff)
        needed = count - int(evict.sum())
        distance = np.sum((self._xyz[slots[tied]] - viewpoint) ** 2, axis=1)
        evict[tied[np.argpartition(-distance, needed - 1)[:needed]]] = True
        self._occupied[slots[evict]] = False
        self._sorted_keys = self._sorted_keys[~evict]
        self._sorted_slots = slots[~evict]
        self.evicted_total += count

    def cloud(self, frame_id: str = "odom") -> PointCloud:
        """The map as points: mean xyz (N, 3) float32 metres and mean colour (N, 3) uint8, in voxel-key order."""
        slots = self._sorted_slots
        rgb = np.clip(np.rint(self._rgb[slots]), 0, 255).astype(np.uint8)
        return PointCloud(xyz=self._xyz[slots].copy(), rgb=rgb, frame_id=frame_id)

    def counts(self) -> NDArray[np.int32]:
        """Observation count (N,) of each voxel, in the order of :meth:`cloud`."""
        return self._count[self._sorted_slots].copy()

    @property
    def nbytes(self) -> int:
        """Bytes held by the map's arrays."""
        arrays = (self._xyz, self._rgb, self._count, self._last_seen, self._occupied, self._sorted_keys,
                  self._sorted_slots)
        return int(sum(a.nbytes for a in arrays))


@dataclass(frozen=True)
class KeyframeMapConfig:
    """The keyframe cloud store and the fused map built from it.

    Attributes:
        map: the fused voxel map (voxel size, hard point bound).
        keyframe_voxel_size_m: voxel size used to downsample each stored keyframe cloud, metres.
        max_points_per_keyframe: at most this many points stored per keyframe.
        max_keyframes: at most this many keyframe clouds stored; when full, the most redundant
            one (closest in position and viewing direction to another stored keyframe, the
            older of that pair) is dropped.
        metres_per_radian: weight of viewing-direction difference against position difference
            when judging redundancy.

    """

    map: VoxelMapConfig = VoxelMapConfig()
    keyframe_voxel_size_m: float = 0.05
    max_points_per_keyframe: int = 4000
    max_keyframes: int = 400
    metres_per_radian: float = 1.0

    def __post_init__(self) -> None:
        _require(self.keyframe_voxel_size_m > 0, f"keyframe_voxel_size_m must be > 0, got {self.keyframe_voxel_size_m}")
        _require(self.max_points_per_keyframe >= 1, "max_points_per_keyframe must be >= 1")
        _require(self.max_keyframes >= 2, f"max_keyframes must be >= 2, got {self.max_keyframes}")
        _require(self.metres_per_radian >= 0, "metres_per_radian must be >= 0")


@dataclass(frozen=True)
class _StoredCloud:
    xyz: NDArray[np.float32]  # (N, 3) keyframe camera frame
    rgb: NDArray[np.uint8]  # (N, 3)


class KeyframeMap:
    """Global map rebuilt from per-keyframe clouds: bounded store + bounded voxel map in ``odom``."""

    def __init__(self, config: KeyframeMapConfig = KeyframeMapConfig()) -> None:
        """An empty map."""
        self.config = config
        self.voxels = VoxelMap(config.map)
        self._clouds: dict[int, _StoredCloud] = {}
        self._poses: dict[int, NDArray[np.float64]] = {}

    def __len__(self) -> int:
        """Number of points in the fused map."""
        return len(self.voxels)

    @property
    def keyframe_ids(self) -> list[int]:
        """Ids of the stored keyframe clouds, oldest first."""
        return list(self._clouds)

    def reset(self) -> None:
        """Forget every keyframe and voxel."""
        self._clouds.clear()
        self._poses.clear()
        self.voxels.clear()

    def add_keyframe(self, keyframe_id: int, pose_odom_keyframe: ArrayLike, cloud: PointCloud) -> None:
        """Store a keyframe's cloud (camera frame) downsampled and fuse it into the map at its pose.

        ``pose_odom_keyframe`` is (4, 4) ``T_odom_keyframe``. Adding an id that is already stored
        replaces its cloud and pose (the voxels it fused before stay until the next rebuild).
        """
        pose = np.asarray(pose_odom_keyframe, dtype=np.float64)
        if pose.shape != (4, 4):
            raise ValueError(f"pose_odom_keyframe must be 4x4, got {pose.shape}")
        reduced = voxel_downsample(cloud.xyz, cloud.rgb, self.config.keyframe_voxel_size_m)
        xyz, rgb = reduced.xyz, reduced.rgb
        limit = self.config.max_points_per_keyframe
        if xyz.shape[0] > limit:
            pick = np.linspace(0, xyz.shape[0] - 1, limit).astype(np.intp)
            xyz, rgb = xyz[pick], rgb[pick]
        stored = _StoredCloud(xyz, np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
        self._clouds.pop(keyframe_id, None)
        self._clouds[keyframe_id] = stored
        self._poses[keyframe_id] = pose.copy()
        if len(self._clouds) > self.config.max_keyframes:
            self._drop_redundant_keyframe()
        self._integrate(keyframe_id)

    def _integrate(self, keyframe_id: int) -> None:
        pose, stored = self._poses[keyframe_id], self._clouds[keyframe_id]
        self.voxels.integrate(transform_points(pose, stored.xyz), stored.rgb, viewpoint=pose[:3, 3])

    def _drop_redundant_keyframe(self) -> None:
        """Drop the older keyframe of the closest pair (position + weighted view direction); never the newest."""
        ids = list(self._clouds)[:-1]
        poses = np.stack([self._poses[i] for i in ids])
        distance = np.linalg.norm(poses[:, None, :3, 3] - poses[None, :, :3, 3], axis=-1)
        view = poses[:, :3, 2]
        angle = np.arccos(np.clip(view @ view.T, -1.0, 1.0))
        cost = distance + self.config.metres_per_radian * angle
        np.fill_diagonal(cost, np.inf)
        a, b = np.unravel_index(int(np.argmin(cost)), cost.shape)
        victim = ids[min(a, b)]  # ids are in insertion order: the smaller index is older
        del self._clouds[victim], self._poses[victim]

    def update_poses(self, poses_odom_keyframe: Mapping[int, NDArray[np.float64]]) -> None:
        """Move stored keyframes to new poses (e.g. after pose-graph optimisation) and rebuild the map.

        Ids not stored are ignored; stored ids missing from ``poses_odom_keyframe`` keep their pose.
        """
        for keyframe_id, pose in poses_odom_keyframe.items():
            if keyframe_id in self._poses:
                self._poses[keyframe_id] = np.asarray(pose, dtype=np.float64).copy()
        self.rebuild()

    def rebuild(self) -> None:
        """Re-fuse every stored keyframe cloud at its current pose, oldest first.

        Keyframes go in batches of :data:`REBUILD_BATCH` per :meth:`VoxelMap.integrate` call, each
        point tagged with its keyframe's order, so the result matches inserting them one by one
        (same running means and recency) at a fraction of the calls.
        """
        self.voxels.clear()
        ids = list(self._clouds)
        for start in range(0, len(ids), REBUILD_BATCH):
            batch = ids[start:start + REBUILD_BATCH]
            clouds = [self._clouds[i] for i in batch]
            xyz = np.concatenate([transform_points(self._poses[i], c.xyz) for i, c in zip(batch, clouds, strict=True)])
            rgb = np.concatenate([c.rgb for c in clouds])
            ticks = np.repeat(self.voxels.tick + 1 + np.arange(len(batch)), [c.xyz.shape[0] for c in clouds])
            self.voxels.integrate(xyz, rgb, viewpoint=self._poses[batch[-1]][:3, 3], ticks=ticks)

    def cloud(self, frame_id: str = "odom") -> PointCloud:
        """The fused map, xyz (N, 3) float32 metres in ``odom`` + rgb (N, 3) uint8."""
        return self.voxels.cloud(frame_id)

    def keyframe_pose(self, keyframe_id: int) -> NDArray[np.float64]:
        """Current ``T_odom_keyframe`` (4, 4) of a stored keyframe."""
        return self._poses[keyframe_id].copy()

    @property
    def stored_points(self) -> int:
        """Total points held in the keyframe cloud store."""
        return int(sum(c.xyz.shape[0] for c in self._clouds.values()))


