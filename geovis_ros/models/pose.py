"""PoseNet: two-frame relative 6-DoF camera motion (SfMLearner-style), the odometry initial guess.

ONNX contract: inputs ``image1``, ``image2`` (B, 3, H, W) float32 normalised like every shipped
network, H and W multiples of :data:`POSE_MULTIPLE`; output ``pose`` (B, 6) float32, the twist
xi = (v, w) (metres, radians; the order of :func:`geovis_ros.geometry.se3.se3_exp`) of
``T_cam2_cam1``: ``se3_exp(xi)`` maps points in camera 1's optical frame into camera 2's
(the ``pose_next_from_this`` of :func:`geovis_ros.geometry.camera.rigid_flow`).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from geovis_ros.models.blocks import (
    ConvAct,
    InferFn,
    ModelInputError,
    check_spatial_multiple,
    exporting,
    module_infer,
    normalize_image,
)

POSE_MULTIPLE = 16
# Output scaling: the head's raw output is multiplied by these (translation m, rotation rad) so
# that typical frame-to-frame motions correspond to raw values of order one.
TWIST_SCALE = (0.1, 0.1, 0.1, 0.02, 0.02, 0.02)


class PoseNet(nn.Module):
    """Six stride-2 ConvAct stages (GroupNorm) over the channel-stacked pair, a 1x1 head, global average."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 96, 128, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 6
        for i, width in enumerate(widths):
            layers.append(ConvAct(in_ch, width, stride=2, kernel=7 if i == 0 else 3, norm="group"))
            in_ch = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(in_ch, 6, 1)
        for param in self.head.parameters():
            nn.init.zeros_(param)
        self.register_buffer("twist_scale", torch.tensor(TWIST_SCALE).view(1, 6), persistent=False)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        """Twist (B, 6) of T_cam2_cam1 from two normalised images (B, 3, H, W)."""
        check_spatial_multiple(image1, POSE_MULTIPLE, "image1")
        if not exporting() and (image1.shape != image2.shape or image1.shape[1] != 3):
            raise ModelInputError(
                f"image1 and image2 must both be (B, 3, H, W), got {tuple(image1.shape)} and {tuple(image2.shape)}"
            )
        raw = self.head(self.body(torch.cat([image1, image2], 1))).mean(dim=(2, 3))
        return raw * self.twist_scale


def _skew_batch(w: torch.Tensor) -> torch.Tensor:
    zero = torch.zeros_like(w[:, 0])
    return torch.stack(
        [
            torch.stack([zero, -w[:, 2], w[:, 1]], -1),
            torch.stack([w[:, 2], zero, -w[:, 0]], -1),
            torch.stack([-w[:, 1], w[:, 0], zero], -1),
        ],
        1,
    )


def twist_to_matrix(xi: torch.Tensor) -> torch.Tensor:
    """Batched SE(3) exponential: twists (B, 6) = (v, w) -> poses (B, 4, 4), differentiable.

    Matches :func:`geovis_ros.geometry.se3.se3_exp`; a Taylor expansion handles small angles.
    """
    v, w = xi[:, :3], xi[:, 3:]
    theta_sq = (w * w).sum(-1).view(-1, 1, 1)
    theta = torch.sqrt(theta_sq.clamp_min(1e-12))
    small = theta_sq < 1e-8
    a = torch.where(small, 1.0 - theta_sq / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta_sq / 24.0, (1.0 - torch.cos(theta)) / theta_sq.clamp_min(1e-12))
    c = torch.where(
        small, 1.0 / 6.0 - theta_sq / 120.0, (theta - torch.sin(theta)) / (theta_sq * theta).clamp_min(1e-12)
    )
    k = _skew_batch(w)
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device).expand_as(k)
    rotation = eye + a * k + b * (k @ k)
    jacobian = eye + b * k + c * (k @ k)
    t = (jacobian @ v.unsqueeze(-1)).squeeze(-1)
    pose = torch.zeros(xi.shape[0], 4, 4, dtype=xi.dtype, device=xi.device)
    pose[:, :3, :3] = rotation
    pose[:, :3, 3] = t
    pose[:, 3, 3] = 1.0
    return pose


def run_pose(
    infer: InferFn, rgb1: NDArray[np.uint8], rgb2: NDArray[np.uint8], network_size: tuple[int, int]
) -> NDArray[np.float64]:
    """Relative pose T_cam2_cam1 (4, 4) float64 from two (H, W, 3) uint8 RGB images.

    Both images are resized (area) to ``network_size`` (width, height) and normalised; ``infer``
    runs the network (an engine's ``infer`` or :func:`module_infer`).
    """
    if rgb1.shape != rgb2.shape:
        raise ModelInputError(f"both images must have the same size, got {rgb1.shape} and {rgb2.shape}")
    images = [normalize_image(cv2.resize(rgb, network_size, interpolation=cv2.INTER_AREA)) for rgb in (rgb1, rgb2)]
    xi = infer({"image1": images[0], "image2": images[1]})["pose"]
    return twist_to_matrix(torch.from_numpy(np.asarray(xi, dtype=np.float64)))[0].numpy()


def predict_pose(
    model: nn.Module, rgb1: NDArray[np.uint8], rgb2: NDArray[np.uint8], network_size: tuple[int, int]
) -> NDArray[np.float64]:
    """:func:`run_pose` with a PyTorch :class:`PoseNet` (any device)."""
    return run_pose(module_infer(model, ("image1", "image2"), ("pose",)), rgb1, rgb2, network_size)
