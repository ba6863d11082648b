"""Image, depth, optical-flow and disparity file formats, with clear errors on malformed files.

Formats:
- RGB images: anything OpenCV reads (PNG, JPEG, ...), returned as (H, W, 3) uint8 RGB.
- Middlebury ``.flo``: float32 magic 202021.25, int32 width, int32 height, then row-major
  (u, v) float32 pairs, little-endian. |u| or |v| > 1e9 marks an unknown vector.
- KITTI flow PNG: 16-bit 3-channel, R = u * 64 + 2^15, G = v * 64 + 2^15, B = valid (0/1).
- Depth PNG: 16-bit single-channel, value = depth_m * scale (1000 = millimetres), 0 = invalid.
- PFM: "Pf" (1 channel) or "PF" (3 channels), "W H", scale (negative = little-endian), float32
  rows stored bottom to top.

Every reader raises :class:`DatasetError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from geovis_ros.errors import GeovisError


class DatasetError(GeovisError, ValueError):
    """A dataset file or folder is missing or malformed; the message names the file and the problem."""


FLO_MAGIC = 202021.25
FLO_UNKNOWN_THRESHOLD = 1e9
FLO_UNKNOWN_VALUE = 1e10
_FLO_HEADER_BYTES = 12
_MAX_IMAGE_SIDE = 100_000
# Magic, width, height, scale; each token ends with exactly one whitespace byte.
_PFM_HEADER = re.compile(rb"(P[Ff])\s+(\d+)\s+(\d+)\s+(\S+)\s")

KITTI_FLOW_SCALE = 64.0
KITTI_FLOW_OFFSET = 2.0**15


def _require_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file does not exist")
    return path


def _imread(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> NDArray[Any]:
    """cv2.imread that raises instead of returning None."""
    path = _require_file(path)
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DatasetError(f"{path}: not a readable image (corrupt or unsupported format)")
    return np.asarray(image)


def _imwrite(path: Path, image: NDArray[Any]) -> None:
    """cv2.imwrite that creates the parent folder and raises on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise DatasetError(f"{path}: could not write image (unsupported extension or unwritable folder)")


# --------------------------------------------------------------------------------------------- RGB


def to_rgb8(image: NDArray[Any], source: str) -> NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB from an OpenCV-ordered image: grey (H, W), BGR or BGRA, 8 or 16 bit.

    16-bit images keep their high byte (v >> 8). ``source`` names the origin for error messages.
    """
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise DatasetError(f"{source}: unsupported image dtype {image.dtype} (expected 8 or 16 bit)")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return np.ascontiguousarray(np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2))
    if image.ndim == 3 and image.shape[2] == 3:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2RGB), dtype=np.uint8)
    raise DatasetError(f"{source}: unsupported image shape {image.shape}")


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")


def _natural_key(path: Path) -> list[int | str]:
    """Sort key that orders embedded numbers by value: frame2 < frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    """Image files (by extension) directly inside ``folder``, in natural name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: image folder does not exist")
    images = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(images, key=_natural_key)


def read_rgb(path: Path) -> NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB image; grey images are repeated to 3 channels, alpha is dropped."""
    return to_rgb8(_imread(path), str(path))


def write_rgb(path: Path, rgb: NDArray[np.uint8]) -> None:
    """Write an (H, W, 3) uint8 RGB image (format from the extension; use PNG for lossless)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DatasetError(f"{path}: expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    _imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def read_mask_png(path: Path) -> NDArray[np.bool_]:
    """(H, W) bool mask from an 8-bit single-channel PNG (True where the value is > 127)."""
    image = _imread(path)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise DatasetError(f"{path}: mask PNG must be 8-bit single-channel, got {image.dtype} {image.shape}")
    return image > 127


def write_mask_png(path: Path, mask: NDArray[np.bool_]) -> None:
    """Write an (H, W) bool mask as an 8-bit single-channel PNG, 255 = True, 0 = False."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DatasetError(f"{path}: expected an (H, W) mask, got shape {mask.shape}")
    _imwrite(path, np.where(mask, 255, 0).astype(np.uint8))


# --------------------------------------------------------------------------------------- flow .flo


def read_flo(path: Path) -> NDArray[np.float32]:
    """Middlebury ``.flo`` optical flow (H, W, 2) float32 pixels (u, v); unknown vectors are NaN."""
    path = _require_file(path)
    raw = path.read_bytes()
    if len(raw) < _FLO_HEADER_BYTES:
        raise DatasetError(f"{path}: truncated .flo header ({len(raw)} bytes, need {_FLO_HEADER_BYTES})")
    magic = float(np.frombuffer(raw, "<f4", count=1)[0])
    if magic != FLO_MAGIC:
        raise DatasetError(f"{path}: bad .flo magic {magic!r} (expected {FLO_MAGIC})")
    width, height = (int(v) for v in np.frombuffer(raw, "<i4", count=2, offset=4))
    if not (0 < width <= _MAX_IMAGE_SIDE and 0 < height <= _MAX_IMAGE_SIDE):
        raise DatasetError(f"{path}: implausible .flo size {width}x{height}")
    expected = _FLO_HEADER_BYTES + width * height * 2 * 4
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DatasetError(f"{path}: .flo data {problem}: {len(raw)} bytes, {width}x{height} needs {expected}")
    flow = np.frombuffer(raw, "<f4", offset=_FLO_HEADER_BYTES).reshape(height, width, 2).astype(np.float32)
    unknown = np.any(np.abs(flow) > FLO_UNKNOWN_THRESHOLD, axis=2)
    flow[unknown] = np.nan
    return flow


def _check_flow(path: Path, flow: NDArray[np.floating]) -> NDArray[np.float32]:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] == 0 or flow.shape[1] == 0:
        raise DatasetError(f"{path}: expected flow of shape (H, W, 2), got {flow.shape}")
    return flow.astype(np.float32, copy=False)


def write_flo(path: Path, flow: NDArray[np.floating]) -> None:
    """Write (H, W, 2) flow in pixels as Middlebury ``.flo``; non-finite vectors become unknown (1e10)."""
    path = Path(path)
    flow = _check_flow(path, flow)
    data = flow.astype("<f4", copy=True)
    data[~np.all(np.isfinite(data), axis=2)] = FLO_UNKNOWN_VALUE
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([flow.shape[1], flow.shape[0]], "<i4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + data.tobytes())


# ------------------------------------------------------------------------------------ flow KITTI


def read_kitti_flow_png(path: Path) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """KITTI 16-bit flow PNG -> (flow (H, W, 2) float32 pixels, valid (H, W) bool).

    Flow is NaN where the valid channel is 0.
    """
    image = _imread(path)
    if image.dtype != np.uint16 or image.ndim != 3 or image.shape[2] != 3:
        raise DatasetError(f"{path}: KITTI flow PNG must be 16-bit 3-channel, got {image.dtype} {image.shape}")
    # OpenCV returns BGR: B = valid, G = v, R = u.
    flow = (image[..., [2, 1]].astype(np.float32) - KITTI_FLOW_OFFSET) / KITTI_FLOW_SCALE
    valid = image[..., 0] > 0
    flow[~valid] = np.nan
    return flow, valid


def write_kitti_flow_png(
    path: Path, flow: NDArray[np.floating], valid: NDArray[np.bool_] | None = None
) -> None:
    """Write (H, W, 2) flow as a KITTI 16-bit PNG; ``valid`` defaults to the finite vectors.

    Values are rounded to 1/64 px and clipped to the representable range (about +-512 px).
    Invalid pixels are stored as zero flow with valid = 0.
    """
    path = Path(path)
    flow = _check_flow(path, flow)
    finite = np.all(np.isfinite(flow), axis=2)
    valid = finite if valid is None else np.asarray(valid, dtype=bool) & finite
    if valid.shape != flow.shape[:2]:
        raise DatasetError(f"{path}: valid mask shape {valid.shape} does not match flow {flow.shape[:2]}")
    encoded = np.where(valid[..., None], flow, 0.0) * KITTI_FLOW_SCALE + KITTI_FLOW_OFFSET
    encoded = np.clip(np.rint(encoded), 0, 65535).astype(np.uint16)
    bgr = np.stack([valid.astype(np.uint16), encoded[..., 1], encoded[..., 0]], axis=2)
    _imwrite(path, bgr)


def read_flow(path: Path) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Flow (H, W, 2) float32 and valid (H, W) bool from a ``.flo`` or KITTI ``.png`` file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".flo":
        flow = read_flo(path)
        return flow, np.all(np.isfinite(flow), axis=2)
    if suffix == ".png":
        return read_kitti_flow_png(path)
    raise DatasetError(f"{path}: unknown flow file type {suffix!r} (expected .flo or KITTI .png)")


# ----------------------------------------------------------------------------------------- depth


# Raw 16-bit depth PNG values that mean "no measurement".
DEPTH_PNG_INVALID = (0, 65535)


def read_depth_png(
    path: Path, scale: float = 1000.0, invalid_values: tuple[int, ...] = DEPTH_PNG_INVALID
) -> NDArray[np.float32]:
    """Depth (H, W) float32 metres from a 16-bit PNG holding depth * ``scale``; NaN where invalid.

    ``invalid_values`` lists raw values that mean "no measurement": by default 0 and 65535 (the
    saturated value sensors such as the Kinect in 7-Scenes write for "no reading").
    """
    if not scale > 0:
        raise DatasetError(f"{path}: depth scale must be > 0, got {scale}")
    raw = _imread(path)
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise DatasetError(f"{path}: depth PNG must be 16-bit single-channel, got {raw.dtype} {raw.shape}")
    depth = raw.astype(np.float32) / np.float32(scale)
    depth[np.isin(raw, invalid_values)] = np.nan
    return depth


def write_depth_png(path: Path, depth_m: NDArray[np.floating], scale: float = 1000.0) -> None:
    """Write depth (H, W) metres as a 16-bit PNG of round(depth * ``scale``).

    NaN, infinite and non-positive depths become 0 (invalid), and so do depths that would need
    65535 or more (e.g. sky in a street scene): a clipped value would be a wrong depth, and 65535
    itself reads back as invalid (:data:`DEPTH_PNG_INVALID`).
    """
    path = Path(path)
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise DatasetError(f"{path}: expected depth of shape (H, W), got {depth.shape}")
    if not scale > 0:
        raise DatasetError(f"{path}: depth scale must be > 0, got {scale}")
    with np.errstate(invalid="ignore"):
        scaled = np.rint(depth * scale)
        valid = np.isfinite(scaled) & (scaled > 0) & (scaled < max(DEPTH_PNG_INVALID))
    raw = np.where(valid, scaled, 0.0).astype(np.uint16)
    _imwrite(path, raw)


# ------------------------------------------------------------------------------------------- PFM


def read_pfm(path: Path) -> NDArray[np.float32]:
    """PFM image: (H, W) float32 for "Pf", (H, W, 3) for "PF", top row first."""
    path = _require_file(path)
    raw = path.read_bytes()
    header = _PFM_HEADER.match(raw[:256])
    if header is None:
        if raw[:2] not in (b"Pf", b"PF"):
            raise DatasetError(f"{path}: bad PFM magic {raw[:2]!r} (expected b'Pf' or b'PF')")
        raise DatasetError(f"{path}: truncated or malformed PFM header {raw[:40]!r}")
    channels = 1 if header.group(1) == b"Pf" else 3
    width, height = int(header.group(2)), int(header.group(3))
    try:
        scale = float(header.group(4))
    except ValueError:
        raise DatasetError(f"{path}: malformed PFM scale {header.group(4)!r}") from None
    if not (0 < width <= _MAX_IMAGE_SIDE and 0 < height <= _MAX_IMAGE_SIDE) or scale == 0:
        raise DatasetError(f"{path}: implausible PFM header: {width}x{height}, scale {scale}")
    position = header.end()
    expected = width * height * channels * 4
    if len(raw) - position != expected:
        problem = "truncated" if len(raw) - position < expected else "has trailing bytes"
        raise DatasetError(
            f"{path}: PFM data {problem}: {len(raw) - position} bytes, {width}x{height}x{channels} needs {expected}"
        )
    dtype = "<f4" if scale < 0 else ">f4"
    data = np.frombuffer(raw, dtype, offset=position).astype(np.float32)
    shape = (height, width) if channels == 1 else (height, width, 3)
    return np.ascontiguousarray(data.reshape(shape)[::-1])


def write_pfm(path: Path, image: NDArray[np.floating]) -> None:
    """Write (H, W) or (H, W, 3) float32 data as little-endian PFM (rows stored bottom to top)."""
    path = Path(path)
    image = np.asarray(image, dtype=np.float32)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise DatasetError(f"{path}: PFM holds (H, W) or (H, W, 3) data, got shape {image.shape}")
    kind = b"Pf" if image.ndim == 2 else b"PF"
    header = kind + b"\n" + f"{image.shape[1]} {image.shape[0]}\n-1.0\n".encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + np.ascontiguousarray(image[::-1]).astype("<f4").tobytes())


def read_depth(path: Path, scale: float = 1000.0) -> NDArray[np.float32]:
    """A (H, W) float32 map by file type, NaN where invalid.

    - ``.png``: 16-bit depth * ``scale`` (see :func:`read_depth_png`), metres;
    - ``.npy``: float array in metres; non-finite and non-positive values become NaN;
    - ``.pfm``: the stored values unchanged (often disparity in pixels, not depth), single channel.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        return read_depth_png(path, scale)
    if suffix == ".npy":
        _require_file(path)
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DatasetError(f"{path}: not a readable .npy array ({err})") from None
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise DatasetError(f"{path}: expected a numeric (H, W) depth array, got {array.dtype} {array.shape}")
        depth = array.astype(np.float32)
        depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
        return depth
    if suffix == ".pfm":
        values = read_pfm(path)
        if values.ndim != 2:
            raise DatasetError(f"{path}: expected a single-channel PFM ('Pf'), got 3 channels")
        return values
    raise DatasetError(f"{path}: unknown depth file type {suffix!r} (expected .png, .npy or .pfm)")
