"""Pre/post-processing around the networks, as explicit functions on numpy arrays or torch tensors.

Every function takes either a numpy array or a torch tensor (any device) and returns the same kind,
so a frame uploaded once to the GPU as uint8 stays there through normalise -> resize/pad ->
network -> unpad/resize. The numpy and torch paths give the same numbers (bilinear: pixel-centre
convention, ``align_corners=False`` = cv2 INTER_LINEAR; nearest: ``nearest-exact``).

Layouts: images are (H, W, 3) RGB on input to :func:`normalize_image`; network tensors are
(N, C, H, W). Padding goes to the bottom and right only, so the principal point is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.inference.engine import is_torch_tensor
from geovis_ros.models.blocks import normalize_image_tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("imagenet", "unit")
INTERPOLATIONS = ("bilinear", "nearest")


def normalize_image(image: Any, mode: str = "imagenet", out: Any = None) -> Any:
    """RGB image (H, W, 3) -> network input (1, 3, H, W) float32.

    ``image``: uint8 in [0, 255] or float in [0, 1]; numpy, or a torch tensor on any device.
    ``mode``: ``imagenet`` ((x - mean) / std with the ImageNet statistics) or ``unit`` (x in [0, 1]).
    ``out``: optional (1, 3, H, W) float32 buffer of the same kind, reused to avoid a per-frame
    allocation; returned. The arithmetic is :func:`geovis_ros.models.blocks.normalize_image_tensor`'s.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {tuple(image.shape)}")
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, got {mode!r}")
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if mode == "imagenet" else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    if is_torch_tensor(image):
        return normalize_image_tensor(image.permute(2, 0, 1).unsqueeze(0), mean, std,
                                      1.0 if image.dtype.is_floating_point else 255.0, out)
    return normalize_image_tensor(image.transpose(2, 0, 1)[None], mean, std, 1.0 if image.dtype.kind == "f" else 255.0,
                                  out)


@dataclass(frozen=True)
class ResizePad:
    """How an image was fitted to a network: resized to ``resized``, then padded (bottom/right) to ``padded``.

    Sizes are (height, width) in pixels.
    """

    source: tuple[int, int]
    resized: tuple[int, int]
    padded: tuple[int, int]

    @property
    def pad_bottom(self) -> int:
        """Rows added below the resized image."""
        return self.padded[0] - self.resized[0]

    @property
    def pad_right(self) -> int:
        """Columns added right of the resized image."""
        return self.padded[1] - self.resized[1]


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """(height, width) rounded up to multiples of ``multiple``."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def resize(tensor: Any, size: tuple[int, int], interpolation: str = "bilinear") -> Any:
    """Resize (N, C, H, W) to ``size`` = (height, width); float dtypes, numpy or torch.

    bilinear: pixel-centre convention without antialiasing (cv2 INTER_LINEAR = torch
    ``align_corners=False``); nearest: source pixel ``floor((dst + 0.5) * in / out)``.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if tensor.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(tensor.shape)}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got {size}")
    if tuple(tensor.shape[2:]) == (height, width):
        return tensor
    if is_torch_tensor(tensor):
        from torch.nn import functional

        if interpolation == "bilinear":
            return functional.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)
        return functional.interpolate(tensor, size=(height, width), mode="nearest-exact")
    if interpolation == "nearest":
        rows = _nearest_indices(tensor.shape[2], height)
        cols = _nearest_indices(tensor.shape[3], width)
        return tensor[:, :, rows[:, None], cols[None, :]]
    n, c = tensor.shape[:2]
    out = np.empty((n, c, height, width), tensor.dtype)
    for plane in np.ndindex(n, c):  # one cv2 call per channel plane, not per pixel
        out[plane] = cv2.resize(tensor[plane], (width, height), interpolation=cv2.INTER_LINEAR)
    return out


def _nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source indices of nearest-exact resampling, computed in float32 exactly as torch does."""
    scale = np.float32(size_in) / np.float32(size_out)
    positions = (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale
    return np.minimum(np.floor(positions).astype(np.int64), size_in - 1)


def resize_and_pad(tensor: Any, multiple: int, size: tuple[int, int] | None = None,
                   interpolation: str = "bilinear") -> tuple[Any, ResizePad]:
    """Fit (N, C, H, W) to a network; returns (tensor, ResizePad).

    Resizes to ``size`` (height, width; None keeps the size), then pads bottom/right by edge
    replication up to multiples of ``multiple``.
    """
    source = (int(tensor.shape[2]), int(tensor.shape[3]))
    resized_size = source if size is None else (int(size[0]), int(size[1]))
    resized = resize(tensor, resized_size, interpolation)
    target = padded_size(*resized_size, multiple)
    info = ResizePad(source, resized_size, target)
    if target == resized_size:
        return resized, info
    if is_torch_tensor(resized):
        from torch.nn import functional

        return functional.pad(resized, (0, info.pad_right, 0, info.pad_bottom), mode="replicate"), info
    return np.pad(resized, ((0, 0), (0, 0), (0, info.pad_bottom), (0, info.pad_right)), mode="edge"), info


def unpad_and_resize(tensor: Any, info: ResizePad, interpolation: str = "bilinear") -> Any:
    """Undo :func:`resize_and_pad` on a network output (N, C, H, W) at the padded size.

    Crops the padding and resizes back to the source size. Values are not rescaled (see
    :func:`restore_flow` for flow).
    """
    if tuple(tensor.shape[2:]) != info.padded:
        raise ValueError(f"expected an output of spatial size {info.padded}, got {tuple(tensor.shape[2:])}")
    cropped = tensor[:, :, :info.resized[0], :info.resized[1]]
    return resize(cropped, info.source, interpolation)


def restore_flow(flow: Any, info: ResizePad) -> Any:
    """Network flow (N, 2, H, W) in network pixels at the padded size -> source size and pixels.

    The flow is cropped and resized back, u scaled by source/resized width, v by source/resized height.
    """
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"expected flow of shape (N, 2, H, W), got {tuple(flow.shape)}")
    restored = unpad_and_resize(flow, info, "bilinear")
    factors = np.array([info.source[1] / info.resized[1], info.source[0] / info.resized[0]], np.float32)
    if is_torch_tensor(restored):
        import torch

        return restored * torch.from_numpy(factors).to(restored.device).view(1, 2, 1, 1)
    return restored * factors[None, :, None, None]


def scale_intrinsics(intrinsics: Intrinsics, info: ResizePad) -> Intrinsics:
    """Intrinsics of the network input: resized as :meth:`Intrinsics.resized`, on the padded canvas.

    Bottom/right padding leaves fx, fy, cx, cy of the resized image unchanged.
    """
    if (intrinsics.height, intrinsics.width) != info.source:
        raise ValueError(f"intrinsics are for {intrinsics.width}x{intrinsics.height}, the image was "
                         f"{info.source[1]}x{info.source[0]}")
    resized = intrinsics.resized(info.resized[1], info.resized[0])
    return replace(resized, width=info.padded[1], height=info.padded[0])
