"""Trajectory files: TUM RGB-D (``t tx ty tz qx qy qz qw``) and KITTI odometry (3x4 row-major).

Both formats hold poses ``T_world_sensor`` (4x4 float64, metres): TUM stores a translation and a
unit quaternion (x, y, z, w) per line, KITTI the top three rows of the matrix. KITTI files carry no
timestamps; :func:`read_trajectory` then returns the line index (0, 1, 2, ...) as the stamp, so
KITTI trajectories associate by index.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.errors import GeovisError
from geovis_ros.geometry.se3 import pose_from_translation_quaternion, quaternion_from_matrix

TrajectoryFormat = Literal["tum", "kitti"]
_VALUES_PER_LINE = {"tum": 8, "kitti": 12}


class TrajectoryFormatError(GeovisError, ValueError):
    """A trajectory file is malformed; the message names the file and the line (1-based)."""


def _check_format(fmt: str) -> None:
    if fmt not in _VALUES_PER_LINE:
        raise ValueError(f"unknown trajectory format {fmt!r}; expected one of {sorted(_VALUES_PER_LINE)}")


def _numeric_lines(path: Path, fmt: str) -> Iterator[tuple[int, list[float]]]:
    """(line number, values) of every data line; blank lines and '#' comments are skipped."""
    expected = _VALUES_PER_LINE[fmt]
    with path.open("r", encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            fields = text.split()
            if len(fields) != expected:
                raise TrajectoryFormatError(
                    f"{path}:{number}: expected {expected} numbers per {fmt.upper()} line, "
                    f"found {len(fields)}: {text[:80]!r}"
                )
            try:
                values = [float(field) for field in fields]
            except ValueError as err:
                raise TrajectoryFormatError(f"{path}:{number}: not a number ({err})") from None
            if not np.all(np.isfinite(values)):
                raise TrajectoryFormatError(f"{path}:{number}: non-finite value in {text[:80]!r}")
            yield number, values


def read_trajectory(
    path: str | Path, fmt: TrajectoryFormat = "tum"
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Read a trajectory file.

    Args:
        path: TUM or KITTI text file.
        fmt: ``"tum"`` (``t tx ty tz qx qy qz qw``, stamps in seconds) or ``"kitti"`` (12 numbers:
            rows 0..2 of the 4x4 pose, row-major).

    Returns:
        ``(stamps_s, poses)``: stamps (N,) float64 seconds (the line index for KITTI) and poses
        (N, 4, 4) float64 ``T_world_sensor``; quaternions are normalised.

    Raises:
        FileNotFoundError: the file does not exist.
        TrajectoryFormatError: a line has the wrong number of fields, a non-number, a non-finite
            value or a zero quaternion, or the file holds no pose (message names file and line).

    """
    _check_format(fmt)
    path = Path(path)
    numbers: list[int] = []
    rows: list[list[float]] = []
    for number, values in _numeric_lines(path, fmt):
        numbers.append(number)
        rows.append(values)
    if not rows:
        raise TrajectoryFormatError(f"{path}: no poses found (empty file or only comments)")
    table = np.asarray(rows, dtype=np.float64)
    if fmt == "kitti":
        poses = np.zeros((len(rows), 4, 4))
        poses[:, :3, :] = table.reshape(-1, 3, 4)
        poses[:, 3, 3] = 1.0
        return np.arange(len(rows), dtype=np.float64), poses
    quaternion_norms = np.linalg.norm(table[:, 4:8], axis=1)
    bad = np.flatnonzero(quaternion_norms < 1e-12)
    if bad.size:
        raise TrajectoryFormatError(f"{path}:{numbers[bad[0]]}: zero quaternion")
    return table[:, 0].copy(), pose_from_translation_quaternion(table[:, 1:4], table[:, 4:8])


def write_trajectory(
    path: str | Path, stamps_s: ArrayLike, poses: ArrayLike, fmt: TrajectoryFormat = "tum"
) -> None:
    """Write a trajectory file that :func:`read_trajectory` (and evo, and the TUM/KITTI tools) read back.

    Numbers are written as the shortest decimal that round-trips the float64 exactly.

    Args:
        path: output file (parent folders are created).
        stamps_s: (N,) seconds; ignored for ``"kitti"`` (the format has no stamps).
        poses: (N, 4, 4) ``T_world_sensor``; the rotation part must be a rotation for ``"tum"``.
        fmt: ``"tum"`` or ``"kitti"``.

    """
    _check_format(fmt)
    poses = np.asarray(poses, dtype=np.float64)
    stamps = np.asarray(stamps_s, dtype=np.float64).reshape(-1)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ValueError(f"poses must have shape (N, 4, 4), got {poses.shape}")
    if fmt == "tum" and stamps.shape[0] != poses.shape[0]:
        raise ValueError(f"{stamps.shape[0]} stamps for {poses.shape[0]} poses")
    if fmt == "tum":
        table = np.concatenate(
            [stamps[:, None], poses[:, :3, 3], quaternion_from_matrix(poses[:, :3, :3])], axis=1
        )
        header = "# timestamp tx ty tz qx qy qz qw\n"
    else:
        table = poses[:, :3, :].reshape(-1, 12)
        header = ""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(" ".join(repr(float(value)) for value in row) + "\n" for row in table)
    path.write_text(header + body, encoding="utf-8")
