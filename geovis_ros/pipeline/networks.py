"""Depth, flow and pose stages: the shipped (or user) networks behind the inference runtime.

Each stage owns one Engine per network input size, created on first use and kept, so a frame
costs one resize, one ``infer`` and one resize back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from geovis_ros.frame import DepthResult, FlowResult, Frame
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import invert
from geovis_ros.inference.engine import Engine, EngineConfig, ModelSpec
from geovis_ros.inference.registry import MODEL_INFO, build_model, get_spec
from geovis_ros.inference.select import create_engine
from geovis_ros.models.blocks import module_infer
from geovis_ros.models.checkpoint import load_weights_into
from geovis_ros.models.depth import DEPTH_MULTIPLE, network_size_for, run_depth
from geovis_ros.models.flow import FLOW_MULTIPLE, run_flow
from geovis_ros.models.pose import POSE_MULTIPLE, run_pose


@dataclass(frozen=True)
class NetworkConfig:
    """Which network runs where.

    Attributes:
        engine: backend, device, precision and engine cache (shared by all networks).
        input_width: network input width in pixels; height follows the image aspect ratio.
        model_path: "" for the shipped weights, a ``.safetensors`` file with weights for the
            shipped architecture, or an ``.onnx`` file with the same input/output names.

    """

    engine: EngineConfig = field(default_factory=EngineConfig)
    input_width: int = 320
    model_path: str = ""


def _spec_for(name: str, model_path: str) -> ModelSpec:
    """The registry's ModelSpec for ``name``, pointed at a user's weights or ONNX file if given."""
    spec = get_spec(name)
    if not model_path:
        return spec
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model_{name}: no such file {path}")
    if path.suffix == ".onnx":
        return replace(spec, onnx_path=path, build_module=None)
    if path.suffix == ".safetensors":
        def build():  # noqa: ANN202 - a ModelSpec factory
            module = build_model(name, pretrained=False)
            load_weights_into(module, path)
            return module.eval()

        return replace(spec, build_module=build)
    raise ValueError(f"model_{name}: expected a .onnx or .safetensors file, got {path.name}")


class _EngineStage:
    """Engines of one network, one per network input size."""

    def __init__(self, name: str, config: NetworkConfig) -> None:
        self.config = config
        self.spec = _spec_for(name, config.model_path)
        self._engines: dict[tuple[int, int], Engine] = {}

    def engine(self, width: int, height: int) -> Engine:
        """The engine for a ``width`` x ``height`` network input (created on first use)."""
        if (width, height) not in self._engines:
            self._engines[(width, height)] = create_engine(self.spec, height, width, self.config.engine)
        return self._engines[(width, height)]

    def describe(self) -> dict[str, str]:
        """Backend / device / precision of the engines in use (for diagnostics and reports)."""
        if not self._engines:
            return {}
        engine = next(iter(self._engines.values()))
        return {f"{self.spec.name}_backend": engine.backend, f"{self.spec.name}_device": engine.device,
                f"{self.spec.name}_precision": engine.precision}


class DepthStage(_EngineStage):
    """Frame -> metric depth and its standard deviation, at the frame's resolution.

    The shipped network runs at the pixel count it was trained at (``MODEL_INFO["depth"].default_size``,
    aspect ratio kept), whatever ``input_width`` says: a CNN sees objects at a different pixel size
    at another resolution, and its metric depth degrades fast away from the trained scale (AbsRel
    0.33 at 192 px vs 1.6 at 320 px on a synthetic room). Keeping the area rather than the width
    keeps wide images (KITTI, 1241x376) from shrinking to a 64-pixel-high strip. A user model runs
    at ``input_width``.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__("depth", config)

    def network_width(self, intrinsics: Intrinsics) -> int:
        """Width in pixels the network runs at for images of ``intrinsics`` (height keeps the aspect)."""
        if self.config.model_path:
            return self.config.input_width
        trained_width, trained_height = MODEL_INFO["depth"].default_size
        return round(math.sqrt(trained_width * trained_height * intrinsics.width / intrinsics.height))

    def __call__(self, frame: Frame) -> DepthResult:
        """Depth (H, W) float32 metres and std (H, W) float32 metres for ``frame``."""
        size = network_size_for(frame.intrinsics, self.network_width(frame.intrinsics), DEPTH_MULTIPLE)
        depth, log_var = run_depth(self.engine(*size).infer, frame.image, frame.intrinsics, size)
        # log_var is the log variance of ln(depth): std of depth ~= depth * sigma (first order).
        std = np.clip(log_var, -20.0, 10.0, out=log_var)
        std *= 0.5
        np.exp(std, out=std)
        std *= depth
        invalid = ~np.isfinite(depth) | (depth <= 0)
        depth[invalid] = np.nan
        std[invalid] = np.nan
        return DepthResult(depth=depth, std=std, intrinsics=frame.intrinsics, is_metric=True)


class FlowStage(_EngineStage):
    """Frame -> optical flow from the previous frame, at the frame's resolution."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__("flow", config)
        self._previous: tuple[int, np.ndarray] | None = None

    def reset(self) -> None:
        """Forget the previous frame."""
        self._previous = None

    def __call__(self, frame: Frame) -> FlowResult | None:
        """Flow (H, W, 2) float32 px previous -> this frame; None for the first frame of a stream."""
        k: Intrinsics = frame.intrinsics
        net_w, net_h = network_size_for(k, self.config.input_width, FLOW_MULTIPLE)
        small: np.ndarray = frame.image if (net_w, net_h) == (k.width, k.height) else cv2.resize(
            frame.image, (net_w, net_h), interpolation=cv2.INTER_AREA)
        previous, self._previous = self._previous, (frame.stamp_ns, small)
        if previous is None or previous[1].shape != small.shape:
            return None
        flow: np.ndarray = run_flow(self.engine(net_w, net_h).infer, previous[1], small)
        if (net_w, net_h) != (k.width, k.height):
            flow = cv2.resize(flow, (k.width, k.height), interpolation=cv2.INTER_LINEAR)
            flow *= np.array([k.width / net_w, k.height / net_h], np.float32)
        return FlowResult(flow=flow.astype(np.float32, copy=False), previous_stamp_ns=previous[0])


class PoseStage(_EngineStage):
    """Frame -> the pose network's relative motion since the previous frame (odometry's initial guess).

    The shipped network runs at its training size (``MODEL_INFO["pose"].default_size``, images
    resized to it); a user model at ``input_width`` with the image's aspect ratio.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__("pose", config)
        self._previous: NDArray[np.uint8] | None = None

    def reset(self) -> None:
        """Forget the previous frame."""
        self._previous = None

    def __call__(self, frame: Frame) -> NDArray[np.float64] | None:
        """(4, 4) float64 T_previous_current (metres, camera optical frames); None for a stream's first frame.

        None too when the image size changed (the motion across a resize is unknown).
        """
        previous, self._previous = self._previous, frame.image
        if previous is None or previous.shape != frame.image.shape:
            return None
        if self.config.model_path:
            size = network_size_for(frame.intrinsics, self.config.input_width, POSE_MULTIPLE)
        else:
            size = MODEL_INFO["pose"].default_size
        # run_pose gives T_current_previous (maps previous-camera points into the current camera).
        return invert(run_pose(self.engine(*size).infer, previous, frame.image, size))


__all__ = ["DepthStage", "FlowStage", "NetworkConfig", "PoseStage", "module_infer"]
