"""The shipped networks as the inference runtime sees them, and the contract for external depth models.

``MODEL_SPECS`` lists one :class:`geovis_ros.inference.engine.ModelSpec` per shipped network:
named inputs/outputs (symbolic ``batch``/``height``/``width`` axes), a builder that loads the
shipped weights, the spatial multiple, the parity tolerances and a golden-input generator.
``MODEL_INFO`` adds the trained size and ONNX opset. How to feed a network and read its outputs
(shipped or a user's export) is its model card (``geovis_ros.models.cards``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from torch import nn

from geovis_ros.errors import GeovisError
from geovis_ros.inference.engine import ModelSpec, TensorSpec
from geovis_ros.models.cards import CardError
from geovis_ros.models.checkpoint import WEIGHTS_DIR, CheckpointError, load_weights_into
from geovis_ros.models.depth import DEPTH_MULTIPLE, DepthNet
from geovis_ros.models.flow import FLOW_MULTIPLE, FlowRefineNet
from geovis_ros.models.pose import POSE_MULTIPLE, PoseNet


class RegistryError(GeovisError, KeyError):
    """An unknown model name or an invalid model description."""


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs beyond :class:`~geovis_ros.inference.engine.ModelSpec` for a shipped network.

    Attributes:
        default_size: (width, height) the network was trained at and runs best at.
        opset: ONNX opset to export with (GridSample in the flow network needs >= 16).

    """

    default_size: tuple[int, int]
    opset: int = 17


def load_shipped(name: str, model: nn.Module, required: bool = False) -> nn.Module:
    """Load ``weights/<name>.safetensors`` into ``model`` and put it in eval mode.

    Without a shipped file: raise :class:`CheckpointError` when ``required``, else warn that the
    network stays randomly initialised (so a fresh checkout still runs end to end).
    """
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if path.is_file():
        load_weights_into(model, path)
    elif required:
        raise CheckpointError(f"no shipped weights for {name!r} at {path}")
    else:
        warnings.warn(
            f"no shipped weights for {name!r} at {path}: the network is randomly initialised",
            RuntimeWarning,
            stacklevel=2,
        )
    return model.eval()


def _image_like(shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float32]:
    """A smooth, image-like normalised tensor (N, C, H, W): blocky low-frequency noise plus fine noise."""
    n, c, h, w = shape
    coarse = rng.standard_normal((n, c, -(-h // 8), -(-w // 8)))
    smooth = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)[:, :, :h, :w]
    return (smooth + 0.3 * rng.standard_normal(shape)).astype(np.float32)


def _golden_inputs(
    shapes: Mapping[str, tuple[int, ...]], rng: np.random.Generator
) -> dict[str, NDArray[np.float32]]:
    """Golden inputs: image-like tensors, and a smooth flow of a few pixels for ``flow_init``."""
    out = {}
    for name, shape in shapes.items():
        if name == "flow_init":
            n, _, h, w = shape
            ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
            coeffs = rng.uniform(-6.0, 6.0, (n, 2, 3, 1, 1))
            out[name] = (coeffs[:, :, 0] + coeffs[:, :, 1] * xs + coeffs[:, :, 2] * ys).astype(np.float32)
        else:
            out[name] = _image_like(shape, rng)
    return out


_IMAGE: tuple[int | str, ...] = ("batch", 3, "height", "width")


def _spec(name: str, factory: Callable[[], nn.Module], inputs: tuple[TensorSpec, ...],
          outputs: tuple[TensorSpec, ...], multiple: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        inputs=inputs,
        outputs=outputs,
        build_module=lambda: load_shipped(name, factory()),
        spatial_multiple=multiple,
        fp32_tolerance=1e-4,
        fp16_tolerance=2e-2,
        input_generator=_golden_inputs,
    )


MODEL_SPECS: list[ModelSpec] = [
    _spec(
        "depth", DepthNet, (TensorSpec("image", _IMAGE),),
        (TensorSpec("depth", ("batch", 1, "height", "width")), TensorSpec("log_var", ("batch", 1, "height", "width"))),
        DEPTH_MULTIPLE,
    ),
    _spec(
        "flow", FlowRefineNet,
        (TensorSpec("image1", _IMAGE), TensorSpec("image2", _IMAGE),
         TensorSpec("flow_init", ("batch", 2, "height", "width"))),
        (TensorSpec("flow", ("batch", 2, "height", "width")),),
        FLOW_MULTIPLE,
    ),
    _spec(
        "pose", PoseNet, (TensorSpec("image1", _IMAGE), TensorSpec("image2", _IMAGE)),
        (TensorSpec("pose", ("batch", 6)),),
        POSE_MULTIPLE,
    ),
]

MODEL_INFO: dict[str, ModelInfo] = {
    "depth": ModelInfo(default_size=(192, 144)),
    "flow": ModelInfo(default_size=(320, 240)),
    "pose": ModelInfo(default_size=(128, 96)),
}


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``; raises :class:`RegistryError` listing the known names."""
    for spec in MODEL_SPECS:
        if spec.name == name:
            return spec
    raise RegistryError(f"unknown model {name!r}; known models: {[s.name for s in MODEL_SPECS]}")


def spec_for_file(name: str, model_path: str = "") -> ModelSpec:
    """The shipped network ``name``'s spec, pointed at a user's file (``model_path``).

    "" = the shipped weights, ``.safetensors`` = weights for the shipped architecture, ``.onnx`` =
    an ONNX with the same input/output names.

    Raises FileNotFoundError for a missing file and CardError for another suffix.
    """
    spec = get_spec(name)
    if not model_path:
        return spec
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model_{name}: no such file {path}")
    if path.suffix == ".onnx":
        return replace(spec, onnx_path=path, build_module=None)
    if path.suffix == ".safetensors":
        def build() -> nn.Module:
            module = build_model(name, pretrained=False)
            load_weights_into(module, path)
            return module.eval()

        return replace(spec, build_module=build)
    raise CardError(f"model_{name}: expected a .onnx or .safetensors file, got {path.name}")


def build_model(name: str, pretrained: bool = True) -> nn.Module:
    """A shipped network in eval mode, with its shipped weights when ``pretrained``."""
    factories: dict[str, Callable[[], nn.Module]] = {"depth": DepthNet, "flow": FlowRefineNet, "pose": PoseNet}
    if name not in factories:
        raise RegistryError(f"unknown model {name!r}; known models: {sorted(factories)}")
    model = factories[name]()
    return load_shipped(name, model) if pretrained else model.eval()
