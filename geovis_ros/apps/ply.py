"""Coloured point clouds as binary little-endian PLY (readable by MeshLab, CloudCompare, Open3D)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from geovis_ros.errors import GeovisError
from geovis_ros.frame import PointCloud

_VERTEX = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
)
_PROPERTIES = b"".join(
    f"property {kind} {name}\n".encode("ascii")
    for name, kind in (("x", "float"), ("y", "float"), ("z", "float"),
                       ("red", "uchar"), ("green", "uchar"), ("blue", "uchar"))
)


class PlyError(GeovisError, ValueError):
    """A PLY file cannot be written or is not one this module reads (the message names the file)."""


def write_ply(path: str | Path, cloud: PointCloud) -> Path:
    """Write ``cloud`` (xyz (N, 3) float32 metres, rgb (N, 3) uint8) as a binary PLY; returns the path.

    The frame id is recorded as a ``comment frame_id <id>`` header line. Parent folders are created.
    """
    xyz, rgb = np.asarray(cloud.xyz), np.asarray(cloud.rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise PlyError(f"cloud xyz and rgb must both be (N, 3), got {xyz.shape} and {rgb.shape}")
    if not cloud.frame_id.isprintable():
        raise PlyError(f"frame_id {cloud.frame_id!r} cannot go in a PLY header (non-printable characters)")
    vertices = np.empty(xyz.shape[0], dtype=_VERTEX)
    for axis, name in enumerate(("x", "y", "z")):
        vertices[name] = xyz[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = rgb[:, channel]
    header = (
        b"ply\nformat binary_little_endian 1.0\n"
        + f"comment frame_id {cloud.frame_id}\nelement vertex {xyz.shape[0]}\n".encode("ascii")
        + _PROPERTIES
        + b"end_header\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        stream.write(header)
        stream.write(vertices.tobytes())
    return path


def read_ply(path: str | Path) -> PointCloud:
    """Read a PLY written by :func:`write_ply` (binary little-endian float xyz + uchar rgb)."""
    path = Path(path)
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise PlyError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise PlyError(f"{path}: only binary little-endian PLY is supported")
    counts = [line.split()[2] for line in header if line.startswith("element vertex")]
    properties = b"".join(line.encode("ascii") + b"\n" for line in header if line.startswith("property"))
    if len(counts) != 1 or properties != _PROPERTIES:
        raise PlyError(f"{path}: expected one vertex element with float x y z and uchar red green blue")
    count = int(counts[0])
    body = data[end + len(b"end_header\n"):]
    if len(body) != count * _VERTEX.itemsize:
        raise PlyError(f"{path}: {len(body)} data bytes for {count} vertices (expected {count * _VERTEX.itemsize})")
    vertices = np.frombuffer(body, dtype=_VERTEX)
    frame_ids = [line.split(maxsplit=2)[2] for line in header if line.startswith("comment frame_id ")]
    xyz: NDArray[np.float32] = np.stack([vertices[n] for n in ("x", "y", "z")], axis=1).astype(np.float32)
    rgb: NDArray[np.uint8] = np.stack([vertices[n] for n in ("red", "green", "blue")], axis=1).astype(np.uint8)
    return PointCloud(xyz=xyz, rgb=rgb, frame_id=frame_ids[0] if frame_ids else "")
