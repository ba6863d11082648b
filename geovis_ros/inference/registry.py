"""The shipped networks as the inference runtime sees them, and the contract for external depth models.

``MODEL_SPECS`` lists one :class:`geovis_ros.inference.engine.ModelSpec` per shipped network:
named inputs/outputs (symbolic ``batch``/``height``/``width`` axes), a builder that loads the
shipped weights, the spatial multiple, the parity tolerances and a golden-input generator.
``MODEL_INFO`` adds the trained size, ONNX opset and, for depth, the output contract.

:class:`DepthModelContract` describes any depth ONNX model (shipped or the user's own, e.g. an
exported Depth Anything) so the pipeline knows how to feed it and what its output means.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from torch import nn

from geovis_ros.errors import GeovisError
from geovis_ros.inference.engine import ModelSpec, TensorSpec
from geovis_ros.models.blocks import IMAGE_MEAN, IMAGE_STD
from geovis_ros.models.checkpoint import WEIGHTS_DIR, CheckpointError, load_weights_into
from geovis_ros.models.depth import CANONICAL_FX, DEPTH_MULTIPLE, DepthNet
from geovis_ros.models.flow import FLOW_MULTIPLE, FlowRefineNet
from geovis_ros.models.pose import POSE_MULTIPLE, PoseNet

DEPTH_OUTPUT_KINDS = ("metric_depth", "relative_inverse_depth", "disparity")


class RegistryError(GeovisError, KeyError):
    """An unknown model name or an invalid model description."""


@dataclass(frozen=True)
class DepthModelContract:
    """How to feed a depth ONNX model and how to read its output.

    Attributes:
        input_name: the image input, (1, 3, H, W) float32, RGB, NCHW.
        mean, std: per-channel normalisation applied to ``rgb / 255``.
        multiple: H and W must be multiples of this.
        output_name: the depth-like output, (1, 1, H, W) or (1, H, W) float32.
        output_kind: ``metric_depth`` (metres), ``relative_inverse_depth`` (affine-invariant,
            larger = closer, unknown scale and shift) or ``disparity`` (pixels, for a stereo
            baseline ``baseline_m``: depth = fx * baseline_m / disparity).
        canonical_fx: for intrinsics-aware metric models: depth is scaled by fx / canonical_fx
            (fx in pixels at the network input size); None means no focal scaling.
        log_var_name: optional output with the log variance of ln(depth).
        baseline_m: stereo baseline for ``disparity`` models.

    """

    input_name: str = "image"
    mean: tuple[float, float, float] = IMAGE_MEAN
    std: tuple[float, float, float] = IMAGE_STD
    multiple: int = DEPTH_MULTIPLE
    output_name: str = "depth"
    output_kind: str = "metric_depth"
    canonical_fx: float | None = CANONICAL_FX
    log_var_name: str | None = "log_var"
    baseline_m: float | None = None

    def __post_init__(self) -> None:
        if self.output_kind not in DEPTH_OUTPUT_KINDS:
            raise RegistryError(f"output_kind must be one of {DEPTH_OUTPUT_KINDS}, got {self.output_kind!r}")
        if self.output_kind == "disparity" and not (self.baseline_m and self.baseline_m > 0):
            raise RegistryError("a disparity model needs a positive baseline_m")
        if self.multiple <= 0:
            raise RegistryError(f"multiple must be positive, got {self.multiple}")

    @property
    def is_metric(self) -> bool:
        """True when the output converts to metres without scale recovery (metric depth, stereo disparity)."""
        return self.output_kind != "relative_inverse_depth"

    def to_depth(self, output: NDArray[np.floating], fx: float) -> NDArray[np.float32]:
        """Depth-like output (any shape) -> depth: metres if :attr:`is_metric`, else relative depth.

        ``fx`` is the focal length in pixels at the network input size. Relative inverse depth
        becomes 1 / output (depth up to an unknown scale; non-positive values -> NaN).
        """
        out = np.asarray(output, dtype=np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.output_kind == "metric_depth":
                canonical = self.canonical_fx
                return out * np.float32(fx / canonical) if canonical else out
            numerator = fx * (self.baseline_m or 0.0) if self.output_kind == "disparity" else 1.0
            return np.where(out > 0, np.float32(numerator) / out, np.nan).astype(np.float32)


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs beyond :class:`~geovis_ros.inference.engine.ModelSpec` for a shipped network.

    Attributes:
        default_size: (width, height) the network was trained at and runs best at.
        opset: ONNX opset to export with (GridSample in the flow network needs >= 16).
        depth_contract: for depth networks, how to feed them and read the output.

    """

    default_size: tuple[int, int]
    opset: int = 17
    depth_contract: DepthModelContract | None = None


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
    "depth": ModelInfo(default_size=(192, 144), depth_contract=DepthModelContract()),
    "flow": ModelInfo(default_size=(320, 240)),
    "pose": ModelInfo(default_size=(128, 96)),
}


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name``; raises :class:`RegistryError` listing the known names."""
    for spec in MODEL_SPECS:
        if spec.name == name:
            return spec
    raise RegistryError(f"unknown model {name!r}; known models: {[s.name for s in MODEL_SPECS]}")


def build_model(name: str, pretrained: bool = True) -> nn.Module:
    """A shipped network in eval mode, with its shipped weights when ``pretrained``."""
    factories: dict[str, Callable[[], nn.Module]] = {"depth": DepthNet, "flow": FlowRefineNet, "pose": PoseNet}
    if name not in factories:
        raise RegistryError(f"unknown model {name!r}; known models: {sorted(factories)}")
    model = factories[name]()
    return load_shipped(name, model) if pretrained else model.eval()
