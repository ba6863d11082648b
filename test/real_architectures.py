"""The field's architectures with random weights and tiny configs, exported to ONNX as their projects do.

- Depth Anything V2: ``transformers``' ``DepthAnythingForDepthEstimation`` (DINOv2 backbone, DPT
  head), exported at a fixed size with input ``pixel_values`` and output ``predicted_depth``
  (B, H, W), like the transformers / optimum export; relative inverse depth (ReLU head).
- A RAFT-like flow network: the public RAFT export's interface (``image1``, ``image2`` RGB 0-255,
  normalised inside as ``2 * (x / 255) - 1``, H and W multiples of 8, a list of flow predictions at
  full resolution in pixels, one per refinement iteration) and RAFT's key ops: 1/8-resolution
  features, an all-pairs correlation volume, iterative residual updates, x8 upsampling.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional

DA_SIZE = (70, 98)  # (height, width), multiples of 14: a static-shape export
RAFT_ITERATIONS = 3


def depth_anything_v2(seed: int = 0) -> nn.Module:
    """A tiny Depth Anything V2 (transformers) with random weights; forward(pixel_values) -> predicted_depth."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(seed)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, patch_size=14,
                            image_size=DA_SIZE[1], out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
                                 neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
                                 depth_estimation_type="relative")
    model = DepthAnythingForDepthEstimation(config).eval()
    with torch.no_grad():  # outputs near 1 +- 0.3 (random init gives ~1e-7), positive as a trained model's
        model.head.conv3.bias.fill_(1.0)
        spread = float(model(pixel_values=torch.randn(1, 3, *DA_SIZE)).predicted_depth.std())
        model.head.conv3.weight.mul_(0.3 / max(spread, 1e-12))

    class PixelValues(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=pixel_values).predicted_depth

    return PixelValues().eval()


class RaftLike(nn.Module):
    """RAFT's interface and key ops at toy size: ``forward(image1, image2)`` -> tuple of (1, 2, H, W) flows, px."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for out in (8, 12, channels):
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.ReLU()]
            width = out
        self.fnet = nn.Sequential(*layers)
        self.update = nn.Sequential(nn.Conv2d(channels + 3, 16, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(16, 2, 3, padding=1))

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image1 = 2 * (image1 / 255.0) - 1.0
        image2 = 2 * (image2 / 255.0) - 1.0
        f1, f2 = self.fnet(image1), self.fnet(image2)
        b, c, h, w = f1.shape
        corr = torch.matmul(f1.flatten(2).transpose(1, 2), f2.flatten(2)) / c ** 0.5  # (B, HW, HW) all pairs
        peak = corr.max(dim=2).values.reshape(b, 1, h, w)
        flow = torch.zeros_like(f1[:, :2])
        predictions = []
        for _ in range(RAFT_ITERATIONS):
            flow = flow + self.update(torch.cat([f1, peak, flow], 1))
            predictions.append(8 * functional.interpolate(flow, scale_factor=8, mode="bilinear", align_corners=True))
        return tuple(predictions)


def export(module: nn.Module, path: Path, inputs: dict[str, torch.Tensor], outputs: list[str],
           dynamic: dict[str, dict[int, str]] | None = None) -> Path:
    """``torch.onnx.export`` (TorchScript exporter, opset 17) with named inputs/outputs; returns ``path``."""
    with torch.no_grad():
        torch.onnx.export(module, tuple(inputs.values()), str(path), dynamo=False, opset_version=17,
                          input_names=list(inputs), output_names=outputs, dynamic_axes=dynamic)
    return path


def export_depth_anything(directory: Path, seed: int = 0) -> tuple[Path, nn.Module]:
    """``depth_anything_v2.onnx`` (fixed size :data:`DA_SIZE`) in ``directory``, and the module."""
    module = depth_anything_v2(seed)
    example = {"pixel_values": torch.randn(1, 3, *DA_SIZE)}
    return export(module, directory / "depth_anything_v2.onnx", example, ["predicted_depth"]), module


def export_raft(directory: Path, seed: int = 0) -> tuple[Path, nn.Module]:
    """``raft.onnx`` (dynamic height/width) in ``directory``, and the module."""
    torch.manual_seed(seed)
    module = RaftLike().eval()
    example = {name: torch.rand(1, 3, 48, 64) * 255 for name in ("image1", "image2")}
    names = [f"flow_{i}" for i in range(RAFT_ITERATIONS)]
    axes = {name: {2: "height", 3: "width"} for name in (*example, *names)}
    return export(module, directory / "raft.onnx", example, names, axes), module
