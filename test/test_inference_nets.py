"""Tiny networks with the real input/output names, shared by the inference tests.

TinyDepthNet: "image" (1, 3, H, W) -> "depth" (1, 1, H, W), positive.
TinyFlowNet: "image0", "image1" -> "flow" (1, 2, H, W) and "confidence" (1, 1, H, W), returned as a
dict; it downsamples by 4 and warps with grid_sample (the ops a real flow network uses).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from geovis_ros.inference.engine import ModelSpec, TensorSpec

IMAGE = (1, 3, "height", "width")


class TinyDepthNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return functional.softplus(self.conv2(torch.relu(self.conv1(image)))) + 0.1


class TinyFlowNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Conv2d(6, 16, 3, stride=4, padding=1)
        self.decode = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, image0: torch.Tensor, image1: torch.Tensor) -> dict[str, torch.Tensor]:
        coarse = self.decode(torch.relu(self.encode(torch.cat([image0, image1], dim=1))))
        up = functional.interpolate(coarse, size=image0.shape[-2:], mode="bilinear", align_corners=False)
        flow = up[:, :2] * 0.1
        grid = torch.tanh(flow).permute(0, 2, 3, 1) * 0.5
        warped = functional.grid_sample(image1, grid, mode="bilinear", align_corners=False)
        confidence = torch.sigmoid(up[:, 2:] + (warped - image0).abs().mean(dim=1, keepdim=True))
        return {"confidence": confidence, "flow": flow}


def _seeded(module_type: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return module_type().eval()


def tiny_depth_spec(**overrides: object) -> ModelSpec:
    fields: dict = dict(name="tiny_depth", inputs=(TensorSpec("image", IMAGE),),
                        outputs=(TensorSpec("depth", (1, 1, "height", "width")),),
                        build_module=lambda: _seeded(TinyDepthNet), spatial_multiple=8)
    fields.update(overrides)
    return ModelSpec(**fields)


def tiny_flow_spec() -> ModelSpec:
    return ModelSpec(
        name="tiny_flow",
        inputs=(TensorSpec("image0", IMAGE), TensorSpec("image1", IMAGE)),
        outputs=(TensorSpec("flow", (1, 2, "height", "width")), TensorSpec("confidence", (1, 1, "height", "width"))),
        build_module=lambda: _seeded(TinyFlowNet), spatial_multiple=8,
    )


def test_tiny_nets_match_their_specs() -> None:
    for spec in (tiny_depth_spec(), tiny_flow_spec()):
        inputs = spec.make_inputs(48, 64, seed=1)
        with torch.inference_mode():
            result = spec.build_module()(*(torch.from_numpy(inputs[t.name]) for t in spec.inputs))
        outputs = result if isinstance(result, dict) else {spec.outputs[0].name: result}
        for tensor in spec.outputs:
            assert outputs[tensor.name].shape == tensor.resolved(48, 64).concrete_shape
            assert np.isfinite(outputs[tensor.name].numpy()).all()
