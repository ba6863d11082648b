"""DepthNet: monocular metric depth with per-pixel uncertainty, intrinsics-aware.

The network predicts depth for a camera with the *canonical* focal length
:data:`CANONICAL_FX` (pixels, at the network input resolution). An object of height S
at depth Z spans ``fx * S / Z`` pixels, so the depth a camera with focal length ``fx``
sees for the same image is ``Z = Z_canonical * fx / CANONICAL_FX``. That scaling is the
explicit post-processing step :func:`scale_depth_to_camera`; a resize changes fx by the
same factor as the image (``Intrinsics.resized``), so resizing keeps metric scale.

ONNX contract: input ``image`` (B, 3, H, W) float32 normalised by
:func:`geovis_ros.models.blocks.normalize_image`, H and W multiples of :data:`DEPTH_MULTIPLE`;
outputs ``depth`` (B, 1, H, W) float32 canonical-focal depth in metres (> 0) and
``log_var`` (B, 1, H, W) float32, the log variance of ln(depth) (dimensionless:
``exp(log_var / 2)`` is the relative depth standard deviation).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.models.blocks import (
    ConvAct,
    DownStage,
    InferFn,
    ModelInputError,
    check_spatial_multiple,
    exporting,
    module_infer,
    normalize_image,
    upsample2,
)

CANONICAL_FX = 100.0  # pixels at the network input resolution
DEPTH_MULTIPLE = 16
MIN_DEPTH_M = 0.05
MAX_DEPTH_M = 150.0
LOG_VAR_RANGE = (-12.0, 6.0)


class DepthNet(nn.Module):
    """Encoder-decoder with skip connections and depth + log-variance heads at 1/8, 1/4, 1/2 and 1/1.

    Args:
        widths: encoder channels at 1/2, 1/4, 1/8 and 1/16 resolution.

    ``forward(image)`` returns the full-resolution ``(depth, log_var)``;
    ``forward_multiscale(image)`` returns ``[(log_depth, log_var), ...]`` coarse to fine for training.

    """

    def __init__(self, widths: tuple[int, int, int, int] = (24, 32, 48, 64)) -> None:
        super().__init__()
        c1, c2, c3, c4 = widths
        self.enc1 = DownStage(3, c1)
        self.enc2 = DownStage(c1, c2)
        self.enc3 = DownStage(c2, c3)
        self.enc4 = DownStage(c3, c4)
        self.context = nn.Sequential(ConvAct(c4, c4, dilation=2), ConvAct(c4, c4, dilation=4))
        self.dec3 = ConvAct(c4 + c3, c3, norm="none")
        self.dec2 = ConvAct(c3 + c2 + 2, c2, norm="none")
        self.dec1 = ConvAct(c2 + c1 + 2, c1, norm="none")
        self.dec0 = ConvAct(c1 + 3 + 2, 16, norm="none")
        heads = [nn.Conv2d(c, 2, 3, padding=1) for c in (c3, c2, c1, 16)]
        with torch.no_grad():
            for head in heads:
                nn.init.normal_(head.weight, std=1e-3)
                head.bias.copy_(torch.tensor([math.log(3.0), 0.0]))  # type: ignore[union-attr]  # start near 3 m
        self.heads = nn.ModuleList(heads)

    def forward_multiscale(self, image: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(log_depth, log_var)] at 1/8, 1/4, 1/2, 1/1 resolution, each (B, 1, h, w) float32."""
        check_spatial_multiple(image, DEPTH_MULTIPLE, "image")
        if not exporting() and image.shape[1] != 3:
            raise ModelInputError(f"image must have 3 channels, got {image.shape[1]}")
        e1 = self.enc1(image)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.context(self.enc4(e3))
        d3 = self.dec3(torch.cat([upsample2(e4), e3], 1))
        out3 = self._head(0, d3)
        d2 = self.dec2(torch.cat([upsample2(d3), e2, upsample2(out3)], 1))
        out2 = self._head(1, d2)
        d1 = self.dec1(torch.cat([upsample2(d2), e1, upsample2(out2)], 1))
        out1 = self._head(2, d1)
        d0 = self.dec0(torch.cat([upsample2(d1), image, upsample2(out1)], 1))
        out0 = self._head(3, d0)
        return [(o[:, :1], o[:, 1:]) for o in (out3, out2, out1, out0)]

    def _head(self, index: int, features: torch.Tensor) -> torch.Tensor:
        raw = self.heads[index](features)
        log_depth = raw[:, :1].clamp(math.log(MIN_DEPTH_M), math.log(MAX_DEPTH_M))
        log_var = raw[:, 1:].clamp(*LOG_VAR_RANGE)
        return torch.cat([log_depth, log_var], 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` (B, 3, H, W) normalised -> ``depth`` (B, 1, H, W) m (canonical fx), ``log_var``."""
        log_depth, log_var = self.forward_multiscale(image)[-1]
        return torch.exp(log_depth), log_var


def scale_depth_to_camera(
    depth_canonical: NDArray[np.floating] | torch.Tensor, fx: float
) -> NDArray[np.float32] | torch.Tensor:
    """Metric depth for a camera with focal length ``fx`` (pixels, at the network input size).

    ``depth = depth_canonical * fx / CANONICAL_FX``; any shape, metres in and out.
    """
    if not math.isfinite(fx) or fx <= 0:
        raise ModelInputError(f"focal length must be a finite positive number of pixels, got {fx}")
    return depth_canonical * (fx / CANONICAL_FX)


def canonical_depth_target(depth_metric: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
    """Training target: metric depth (B, 1, H, W) -> canonical-focal depth; fx (B,) pixels at that size."""
    return depth_metric * (CANONICAL_FX / fx.view(-1, 1, 1, 1))


def network_size_for(intrinsics: Intrinsics, target_width: int, multiple: int = DEPTH_MULTIPLE) -> tuple[int, int]:
    """(width, height) near ``target_width`` wide, keeping the aspect ratio, both multiples of ``multiple``."""
    width = max(multiple, int(round(target_width / multiple)) * multiple)
    height = max(multiple, int(round(width * intrinsics.height / intrinsics.width / multiple)) * multiple)
    return width, height


def run_depth(
    infer: InferFn, rgb: NDArray[np.uint8], intrinsics: Intrinsics, network_size: tuple[int, int]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Metric depth (H, W) float32 metres and log-variance (H, W) for one (H, W, 3) uint8 RGB image.

    ``infer`` runs the network (an engine's ``infer`` or :func:`module_infer`). Steps, each explicit:
    resize the image to ``network_size`` (width, height) with area interpolation, rescale the
    intrinsics the same way, normalise, run, scale the canonical depth by the resized fx
    (:func:`scale_depth_to_camera`), resize depth and log-variance back to (H, W) bilinearly.
    """
    h, w = rgb.shape[:2]
    if (intrinsics.width, intrinsics.height) != (w, h):
        raise ModelInputError(
            f"intrinsics are for {intrinsics.width}x{intrinsics.height} but the image is {w}x{h}"
        )
    net_w, net_h = network_size
    if net_w % DEPTH_MULTIPLE or net_h % DEPTH_MULTIPLE:
        raise ModelInputError(f"network size {net_w}x{net_h} must be multiples of {DEPTH_MULTIPLE}")
    resized = rgb if (net_w, net_h) == (w, h) else cv2.resize(rgb, (net_w, net_h), interpolation=cv2.INTER_AREA)
    outputs = infer({"image": normalize_image(np.asarray(resized, dtype=np.uint8))})
    net_depth = np.asarray(scale_depth_to_camera(outputs["depth"][0, 0], intrinsics.resized(net_w, net_h).fx))
    net_log_var = np.asarray(outputs["log_var"][0, 0], dtype=np.float32)
    if (net_w, net_h) == (w, h):
        return net_depth.astype(np.float32), net_log_var
    depth = cv2.resize(net_depth, (w, h), interpolation=cv2.INTER_LINEAR)
    log_var = cv2.resize(net_log_var, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.asarray(depth, dtype=np.float32), np.asarray(log_var, dtype=np.float32)


def predict_depth(
    model: nn.Module, rgb: NDArray[np.uint8], intrinsics: Intrinsics, network_size: tuple[int, int]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """:func:`run_depth` with a PyTorch :class:`DepthNet` (any device)."""
    return run_depth(module_infer(model, ("image",), ("depth", "log_var")), rgb, intrinsics, network_size)
