"""Building blocks shared by the depth, flow and pose networks, plus their pre-processing.

Every block uses only operators that export cleanly to ONNX (opset 17) and TensorRT:
Conv, BatchNorm (folded at export), LeakyReLU, Resize (bilinear, ``align_corners=False``),
Slice, Concat, and — in the flow network only — GridSample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from numpy.typing import NDArray
from torch import nn

from geovis_ros.errors import GeovisError

# Input normalisation of every shipped network: x = (rgb / 255 - MEAN) / STD, RGB order, NCHW.
IMAGE_MEAN: tuple[float, float, float] = (0.45, 0.45, 0.45)
IMAGE_STD: tuple[float, float, float] = (0.225, 0.225, 0.225)


class ModelInputError(GeovisError, ValueError):
    """An input array or tensor has the wrong shape, dtype or size for a network."""


def normalize_image(rgb: NDArray[Any]) -> NDArray[np.float32]:
    """Network input (1, 3, H, W) float32 from an (H, W, 3) uint8 RGB image.

    Applies ``(rgb / 255 - IMAGE_MEAN) / IMAGE_STD`` per channel (:func:`normalize_image_tensor`).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ModelInputError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    return normalize_image_tensor(rgb.transpose(2, 0, 1)[None])


@overload
def normalize_image_tensor(
    pixels: torch.Tensor, mean: Sequence[float] = ..., std: Sequence[float] = ..., white: float = ...,
    out: torch.Tensor | None = ...,
) -> torch.Tensor: ...


@overload
def normalize_image_tensor(
    pixels: NDArray[Any], mean: Sequence[float] = ..., std: Sequence[float] = ..., white: float = ...,
    out: NDArray[np.float32] | None = ...,
) -> NDArray[np.float32]: ...


def normalize_image_tensor(
    pixels: torch.Tensor | NDArray[Any], mean: Sequence[float] = IMAGE_MEAN, std: Sequence[float] = IMAGE_STD,
    white: float = 255.0, out: torch.Tensor | NDArray[np.float32] | None = None,
) -> torch.Tensor | NDArray[np.float32]:
    """Per-channel ``(pixels / white - mean) / std`` of RGB batches: the input normalisation of every network.

    Args:
        pixels: (B, 3, H, W) RGB, any real dtype and any strides (a transposed (H, W, 3) image
            works): a numpy array, or a torch tensor on any device.
        mean: 3 per-channel means of the unit-range image (default: the shipped networks' :data:`IMAGE_MEAN`).
        std: 3 per-channel standard deviations of the unit-range image (default: :data:`IMAGE_STD`).
        white: the pixel value of full white (255 for 8-bit images, 1 for images in [0, 1]).
        out: optional (B, 3, H, W) float32 buffer of the same kind as ``pixels``, reused to avoid an
            allocation per frame; a new contiguous one otherwise.

    Returns:
        (B, 3, H, W) float32 of the same kind (``out`` when given). Every step is rounded to
        float32 in turn (convert, divide, subtract, divide), in numpy and torch alike.

    """
    if isinstance(pixels, torch.Tensor):
        channel_mean = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        channel_std = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
        if out is None:
            out = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device)
        assert isinstance(out, torch.Tensor)
        return out.copy_(pixels).div_(white).sub_(channel_mean).div_(channel_std)
    if out is None:
        out = np.empty(pixels.shape, np.float32)
    assert isinstance(out, np.ndarray)
    np.copyto(out, pixels, casting="unsafe")
    out /= np.float32(white)
    out -= np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    out /= np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return out


def exporting() -> bool:
    """True while the module is being traced or exported (shape checks must not become constants)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting()


def check_spatial_multiple(tensor: torch.Tensor, multiple: int, name: str) -> None:
    """Raise :class:`ModelInputError` unless ``tensor`` is (B, C, H, W) with H, W multiples of ``multiple``.

    Skipped while tracing for export, where the exported graph keeps the sizes dynamic.
    """
    if exporting():
        return
    if tensor.dim() != 4:
        raise ModelInputError(f"{name} must be (B, C, H, W), got shape {tuple(tensor.shape)}")
    h, w = int(tensor.shape[-2]), int(tensor.shape[-1])
    if h % multiple or w % multiple or h == 0 or w == 0:
        raise ModelInputError(f"{name} height and width must be positive multiples of {multiple}, got {w}x{h}")


InferFn = Callable[[Mapping[str, NDArray[np.float32]]], Mapping[str, NDArray[np.float32]]]
"""``infer({input name: array}) -> {output name: array}``: an inference engine's ``infer`` or :func:`module_infer`."""


def module_infer(model: nn.Module, input_names: Sequence[str], output_names: Sequence[str]) -> InferFn:
    """Wrap an ``nn.Module`` as an :data:`InferFn`: numpy in, numpy out, no gradients, model's device."""

    def infer(inputs: Mapping[str, NDArray[np.float32]]) -> dict[str, NDArray[np.float32]]:
        device = next(model.parameters()).device
        with torch.no_grad():
            outputs = model(*(torch.from_numpy(np.ascontiguousarray(inputs[n])).to(device) for n in input_names))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return {n: o.float().cpu().numpy() for n, o in zip(output_names, outputs, strict=True)}

    return infer


NORMS = ("batch", "group", "none")


class ConvAct(nn.Module):
    """k x k convolution, normalisation (``batch``, ``group``: GroupNorm of 8 groups, ``none``), LeakyReLU(0.1)."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int = 1, kernel: int = 3, dilation: int = 1, norm: str = "batch"
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        padding = dilation * (kernel // 2)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, bias=norm == "none")
        nn.init.kaiming_normal_(self.conv.weight, a=0.1, mode="fan_out", nonlinearity="leaky_relu")
        layers: dict[str, nn.Module] = {
            "batch": nn.BatchNorm2d(out_ch), "group": nn.GroupNorm(8, out_ch), "none": nn.Identity()
        }
        self.norm = layers[norm]
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride)."""
        return self.act(self.norm(self.conv(x)))


class DownStage(nn.Module):
    """Encoder stage: a stride-2 ConvAct then a residual ConvAct; halves H and W."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch") -> None:
        super().__init__()
        self.down = ConvAct(in_ch, out_ch, stride=2, norm=norm)
        self.conv = ConvAct(out_ch, out_ch, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H/2, W/2)."""
        y = self.down(x)
        return y + self.conv(y)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling, ``align_corners=False`` (ONNX Resize, TensorRT-friendly)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def upsample_flow(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """Flow (B, 2, H, W) in pixels of its grid -> (B, 2, H*factor, W*factor) in pixels of the finer grid."""
    up = F.interpolate(flow, scale_factor=float(factor), mode="bilinear", align_corners=False)
    return up * float(factor)


def downsample_flow(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """Flow (B, 2, H, W) in pixels -> (B, 2, H/factor, W/factor) in pixels of the coarser grid (area mean)."""
    return F.avg_pool2d(flow, factor) / float(factor)


def backward_warp(source: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``source`` (B, C, H, W) at ``p + flow(p)``; flow (B, 2, H, W) in pixels (u, v).

    Bilinear GridSample with zero padding and ``align_corners=False`` (pixel centres at
    integer coordinates, the convention of :mod:`geovis_ros.geometry.camera`).
    Returns (B, C, H, W): the source image warped into the target frame.
    """
    _, _, h, w = flow.shape
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, h, 1).expand(1, h, w)
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, w).expand(1, h, w)
    u = xs + flow[:, 0]
    v = ys + flow[:, 1]
    grid = torch.stack([(2.0 * u + 1.0) / w - 1.0, (2.0 * v + 1.0) / h - 1.0], dim=-1)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def unit_features(features: torch.Tensor) -> torch.Tensor:
    """Features (B, C, H, W) scaled to unit L2 norm over channels (plain ReduceSum/Sqrt/Div in ONNX)."""
    return features / torch.sqrt(features.pow(2).sum(dim=1, keepdim=True) + 1e-6)


def local_correlation(feat1: torch.Tensor, feat2: torch.Tensor, radius: int) -> torch.Tensor:
    """Cost volume (B, (2r+1)^2, H, W): mean over channels of feat1(p) * feat2(p + d), |d|_inf <= r.

    Built from explicit shifted slices of a zero-padded ``feat2`` (plain Pad/Slice/Mul/ReduceMean
    in ONNX, no custom op). Displacement order: row-major over (dy, dx), both from -r to r.
    """
    _, _, h, w = feat1.shape
    padded = F.pad(feat2, (radius, radius, radius, radius))
    costs = [
        (feat1 * padded[:, :, dy : dy + h, dx : dx + w]).mean(dim=1, keepdim=True)
        for dy in range(2 * radius + 1)
        for dx in range(2 * radius + 1)
    ]
    return torch.cat(costs, dim=1)
