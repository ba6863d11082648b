"""What every dataset reader is (an iterable of SequenceFrame with intrinsics), plus shared checks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from geovis_ros.data.image_io import DatasetError, read_rgb
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.geometry.camera import Intrinsics


@runtime_checkable
class FrameSource(Protocol):
    """A sequence of frames: iterate to stream them in time order; ``len()`` where it is known."""

    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics shared by all frames."""
        ...

    def __iter__(self) -> Iterator[SequenceFrame]:
        """Frames in time order, loaded lazily."""
        ...


class IndexedFrameSource(ABC):
    """Base for folder readers whose frames are files addressed by index (random access).

    A subclass sets ``_intrinsics`` in its constructor and implements ``__len__`` and ``load``.
    """

    _intrinsics: Intrinsics

    @abstractmethod
    def __len__(self) -> int:
        """Number of frames."""

    @abstractmethod
    def load(self, index: int) -> SequenceFrame:
        """Read frame ``index`` (0 <= index < len) from disk."""

    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics shared by all frames (those of the colour images, at their size)."""
        return self._intrinsics

    def __getitem__(self, index: int) -> SequenceFrame:
        """Frame ``index``; negative indices count from the end."""
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"frame index {index} out of range for {count} frames")
        return self.load(index % count)

    def __iter__(self) -> Iterator[SequenceFrame]:
        """Frames in order, each read when it is reached."""
        return (self.load(i) for i in range(len(self)))


class TrajectoryFrameSource(IndexedFrameSource):
    """Base for readers whose ground truth is one trajectory file (TUM ``groundtruth.txt``, KITTI poses).

    A subclass sets ``_poses`` to the file's poses, (N, 4, 4) float64 T_world_camera, when it found one.
    """

    _poses: NDArray[np.float64] | None = None

    @property
    def has_poses(self) -> bool:
        """Whether a ground-truth trajectory file was found."""
        return self._poses is not None


def check_frame(frame: SequenceFrame) -> None:
    """Raise DatasetError unless the frame's arrays have the dtypes and shapes SequenceFrame documents."""
    k = frame.intrinsics
    size = (k.height, k.width)
    where = f"frame {frame.name!r}"
    if frame.rgb.dtype != np.uint8 or frame.rgb.shape != (*size, 3):
        raise DatasetError(f"{where}: rgb must be uint8 {(*size, 3)} to match its intrinsics, "
                           f"got {frame.rgb.dtype} {frame.rgb.shape}")
    if frame.depth is not None and frame.depth.shape != size:
        raise DatasetError(f"{where}: depth shape {frame.depth.shape} != image size {size}")
    if frame.pose is not None and np.shape(frame.pose) != (4, 4):
        raise DatasetError(f"{where}: pose must be 4x4, got shape {np.shape(frame.pose)}")
    if frame.flow is not None and frame.flow.shape != (*size, 2):
        raise DatasetError(f"{where}: flow shape {frame.flow.shape} != {(*size, 2)}")
    if frame.flow_valid is not None and frame.flow_valid.shape != size:
        raise DatasetError(f"{where}: flow_valid shape {frame.flow_valid.shape} != image size {size}")


def associate_nearest(
    query_ns: NDArray[np.int64], target_ns: NDArray[np.int64], max_difference_ns: int
) -> NDArray[np.intp]:
    """For each query stamp, the index of the nearest target stamp within ``max_difference_ns``, else -1.

    ``target_ns`` must be sorted ascending. Several queries may match the same target (like the
    TUM tools' nearest-neighbour association for ground truth).
    """
    query = np.asarray(query_ns, dtype=np.int64)
    target = np.asarray(target_ns, dtype=np.int64)
    if target.size == 0:
        return np.full(query.shape, -1, dtype=np.intp)
    right = np.clip(np.searchsorted(target, query), 0, target.size - 1)
    left = np.clip(right - 1, 0, target.size - 1)
    nearest = np.where(np.abs(target[left] - query) <= np.abs(target[right] - query), left, right)
    return np.where(np.abs(target[nearest] - query) <= max_difference_ns, nearest, -1).astype(np.intp)


def read_rgb_sized(path: Path, intrinsics: Intrinsics) -> NDArray[np.uint8]:
    """RGB image (H, W, 3) uint8 that must have the size the intrinsics are for."""
    rgb = read_rgb(path)
    if rgb.shape[:2] != (intrinsics.height, intrinsics.width):
        raise DatasetError(
            f"{path}: image is {rgb.shape[1]}x{rgb.shape[0]}, the sequence is {intrinsics.width}x{intrinsics.height}"
        )
    return rgb
