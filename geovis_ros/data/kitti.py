"""KITTI odometry sequences: images, ``calib.txt`` projection matrices, ``times.txt`` and poses.

Standard layout (``dataset/sequences/<seq>/``)::

    image_0/ image_1/        grey left / right PNGs (000000.png, ...)
    image_2/ image_3/        colour left / right PNGs
    calib.txt                "P0: 12 numbers" ... "P3: ..." (3x4 rectified projections, row-major)
    times.txt                one timestamp (s) per image
    ../../poses/<seq>.txt    KITTI 3x4 poses of camera 0: T_world_cam0 (world = first cam0 frame)

Also accepted: ``image_l``/``image_r`` (or ``image_left``/``image_right``) folders, unlabelled
``calib.txt`` lines (line i = Pi), ``poses.txt`` inside the folder, and no ``times.txt``
(stamps at 10 Hz, the KITTI capture rate).

Poses are re-expressed for the camera that is read: T_world_camX = T_world_cam0 T_cam0_camX, with
the camera offset taken from its projection matrix (P_X = K [I | t], p_camX = p_cam0 + t).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from geovis_ros.data.calibration import CalibrationSource, load_calibration
from geovis_ros.data.frame_source import TrajectoryFrameSource, read_rgb_sized
from geovis_ros.data.image_io import DatasetError, list_images, read_rgb
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.data.trajectory_io import TrajectoryFormatError, read_trajectory
from geovis_ros.geometry.camera import CameraModelError, Intrinsics
from geovis_ros.geometry.se3 import invert

CAMERA_FOLDERS: dict[str, int] = {
    "image_0": 0, "image_2": 2, "image_1": 1, "image_3": 3,
    "image_l": 0, "image_left": 0, "image_r": 1, "image_right": 1,
}
"""Image folder -> index of its projection matrix in calib.txt, in the order they are looked for."""
KITTI_FRAME_RATE_HZ = 10.0
_LABELLED_P = re.compile(r"^P(\d)$")


def read_kitti_projections(path: Path) -> dict[int, NDArray[np.float64]]:
    """Projection matrices {camera index: (3, 4)} from a KITTI ``calib.txt``.

    Lines ``Pk: 12 numbers`` give camera k; unlabelled lines of 12 numbers give cameras 0, 1, ...
    in order; other labelled lines (``Tr:``, ``R0_rect:``) are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: calibration file does not exist")
    projections: dict[int, NDArray[np.float64]] = {}
    unlabelled = 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        label, colon, rest = text.partition(":")
        if colon:
            match = _LABELLED_P.match(label.strip())
            if match is None:
                continue
            camera, fields = int(match.group(1)), rest.split()
        else:
            camera, fields = unlabelled, text.split()
            unlabelled += 1
        try:
            values = np.array([float(f) for f in fields], dtype=np.float64)
        except ValueError:
            raise DatasetError(f"{path}:{number}: non-numeric projection matrix {text[:80]!r}") from None
        if values.size != 12 or not np.all(np.isfinite(values)):
            raise DatasetError(f"{path}:{number}: expected 12 finite numbers (3x4 matrix), got {len(fields)}")
        projections[camera] = values.reshape(3, 4)
    if not projections:
        raise DatasetError(f"{path}: no projection matrix found (expected 'P0: ...' lines)")
    return projections


def _read_times(path: Path, count: int) -> NDArray[np.int64]:
    """Stamps (ns) from ``times.txt``, one seconds value per line; count must match the images."""
    stamps: list[int] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        try:
            stamps.append(round(float(text) * 1e9))
        except ValueError:
            raise DatasetError(f"{path}:{number}: timestamp {text[:40]!r} is not a number") from None
    if len(stamps) != count:
        raise DatasetError(f"{path}: {len(stamps)} timestamps for {count} images")
    return np.array(stamps, dtype=np.int64)


class KittiSequence(TrajectoryFrameSource):
    """Reader of a KITTI odometry sequence folder (layout in the module docstring).

    Args:
        path: the sequence folder (holding ``image_0/`` or ``image_2/`` ... and ``calib.txt``).
        camera: image sub-folder to read; default the first present of :data:`CAMERA_FOLDERS`.
        poses: KITTI pose file; default ``poses.txt`` in the folder, else ``../../poses/<seq>.txt``;
            frames have no pose when neither exists.
        calib: override for the intrinsics (file, ``"fx,fy,cx,cy"`` or Intrinsics); poses are then
            used as they are (no camera offset).

    Grey images are returned as 3-channel RGB.

    """

    def __init__(
        self,
        path: Path,
        camera: str | None = None,
        poses: Path | None = None,
        calib: CalibrationSource | None = None,
    ) -> None:
        self.path = Path(path)
        folders = [camera] if camera else [name for name in CAMERA_FOLDERS if (self.path / name).is_dir()]
        if not folders or not (self.path / folders[0]).is_dir():
            looked_for = camera or ", ".join(CAMERA_FOLDERS)
            raise DatasetError(f"{self.path}: not a KITTI sequence (no image folder; looked for {looked_for})")
        self.camera = folders[0]
        self._images = list_images(self.path / self.camera)
        if not self._images:
            raise DatasetError(f"{self.path / self.camera}: no images")
        height, width = read_rgb(self._images[0]).shape[:2]

        camera_from_cam0 = np.eye(4)
        if calib is not None:
            self._intrinsics = load_calibration(calib).intrinsics(width, height, str(calib))
        else:
            calib_path = self.path / "calib.txt"
            projections = read_kitti_projections(calib_path)
            index = CAMERA_FOLDERS.get(self.camera, 0)
            if index not in projections:
                available = ", ".join(f"P{i}" for i in sorted(projections))
                raise DatasetError(f"{calib_path}: no P{index} for {self.camera} (has {available})")
            projection = projections[index]
            try:
                self._intrinsics = Intrinsics.from_matrix(projection[:, :3], width, height)
            except CameraModelError as err:
                raise DatasetError(f"{calib_path}: P{index}: {err}") from None
            camera_from_cam0[:3, 3] = np.linalg.solve(projection[:, :3], projection[:, 3])
        cam0_from_camera = invert(camera_from_cam0)

        times_path = self.path / "times.txt"
        if times_path.is_file():
            self._stamps_ns = _read_times(times_path, len(self._images))
        else:
            self._stamps_ns = np.round(np.arange(len(self._images)) * 1e9 / KITTI_FRAME_RATE_HZ).astype(np.int64)

        pose_path = poses if poses is not None else self._default_pose_file()
        if pose_path is not None:
            try:
                _, cam0_poses = read_trajectory(pose_path, "kitti")
            except (TrajectoryFormatError, FileNotFoundError) as err:
                raise DatasetError(str(err)) from err
            if len(cam0_poses) != len(self._images):
                raise DatasetError(f"{pose_path}: {len(cam0_poses)} poses for {len(self._images)} images")
            self._poses = cam0_poses @ cam0_from_camera

    def _default_pose_file(self) -> Path | None:
        for candidate in (self.path / "poses.txt", self.path.parent.parent / "poses" / f"{self.path.name}.txt"):
            if candidate.is_file():
                return candidate
        return None

    def __len__(self) -> int:
        """Number of images."""
        return len(self._images)

    def load(self, index: int) -> SequenceFrame:
        """Frame ``index``: RGB image, stamp and (where known) pose T_world_camera."""
        image_path = self._images[index]
        rgb = read_rgb_sized(image_path, self._intrinsics)
        pose = None if self._poses is None else self._poses[index].copy()
        return SequenceFrame(
            name=image_path.stem, stamp_ns=int(self._stamps_ns[index]), rgb=rgb,
            intrinsics=self._intrinsics, pose=pose,
        )
