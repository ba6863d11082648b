"""Depth, flow and pose stages: the shipped or a user's networks behind the inference runtime.

Depth and flow networks are driven by their model card (``geovis_ros.models.cards``): the card is
found and checked against the network when the stage is created (a mismatch is refused then, with
one line naming the card field), and :mod:`geovis_ros.inference.card_runtime` does the pre- and
post-processing. Engines are kept per network input size in a bounded LRU (by count and by an
estimate of their memory); the input size snaps to a few buckets, so nearby image sizes share one.
A backend that fails to build or load falls back once to the next one in the ``auto`` order: the
failure is logged, kept in :meth:`_EngineStage.describe` for /diagnostics, and never retried.

On a CUDA engine every stage's work runs on the device's one shared stream
(:mod:`geovis_ros.inference.gpu`): per frame each stage's network inputs go up once through pinned
buffers and its outputs come down once, with one wait (the odometry, fusion and clouds are CPU code,
so depth and flow must reach the host); the flow stage keeps the frame's image tensor on the GPU as
the next frame's first image. What stays on the host, and why: resizing and normalisation (OpenCV's
area resize has no exact torch twin, and both paths must feed the networks the same tensors), the
flow initialisation (OpenCV DIS), the restoring of outputs to the source size (after the download of
the smaller network-size output), and the pose network's pre-processing
(:func:`geovis_ros.models.pose.run_pose`, which normalises both images each frame).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geovis_ros.frame import DepthResult, FlowResult, Frame
from geovis_ros.geometry.se3 import invert
from geovis_ros.inference.card_runtime import (
    BoundModel,
    bind_model,
    check_golden_outputs,
    depth_from_outputs,
    flow_from_outputs,
    flow_init_input,
    golden_plan,
    model_inputs,
    plan_input,
)
from geovis_ros.inference.engine import Engine, EngineConfig, InferenceError, ModelSpec
from geovis_ros.inference.export import onnx_bytes_for
from geovis_ros.inference.gpu import DeviceStream
from geovis_ros.inference.preprocess import ResizePad
from geovis_ros.inference.registry import MODEL_INFO, spec_for_file
from geovis_ros.inference.select import backend_order, create_engine, reference_engine
from geovis_ros.models.blocks import module_infer
from geovis_ros.models.cards import CardError, card_for_model
from geovis_ros.models.depth import network_size_for
from geovis_ros.models.pose import POSE_MULTIPLE, run_pose

LOG = logging.getLogger(__name__)
ACTIVATION_FACTOR = 16  # engine memory estimate: this many times its input + output tensor bytes
FLOW_REFINEMENTS = ("auto", "network", "initialisation")


@dataclass(frozen=True)
class NetworkConfig:
    """Which network runs where.

    Attributes:
        engine: backend, device, precision and engine cache (shared by all networks).
        input_width: network input width in pixels (height follows the image aspect ratio) for
            cards that neither fix the size nor give a pixel area.
        model_path: "" for the shipped weights, a ``.safetensors`` file with weights for the
            shipped architecture, or an ``.onnx`` file.
        card: the model card: a preset name or a card file; "" = ``<model>.yaml`` beside an ONNX
            file, else the shipped network's card.
        max_engines: engines (input sizes) kept per network; the least recently used goes first.
        max_engine_mib: bound on the estimated memory of the kept engines, MiB.
        flow_refinement: flow networks only, for cards with a ``flow_init`` input (the shipped one):
            ``network`` runs the learned refinement, ``initialisation`` returns its seeded-DIS
            initialisation without running the network, ``auto`` the initialisation where the
            engine would run on a CPU and the network where it would run on a GPU (on 2 CPU cores
            the refinement takes the flow stage from 14 to 68 ms per 320x240 frame for no measured
            gain: see the model card's FlowRefineNet section). A card without ``flow_init`` always runs its network.

    """

    engine: EngineConfig = field(default_factory=EngineConfig)
    input_width: int = 320
    model_path: str = ""
    card: str = ""
    max_engines: int = 3
    max_engine_mib: int = 2048
    flow_refinement: str = "auto"

    def __post_init__(self) -> None:
        if self.flow_refinement not in FLOW_REFINEMENTS:
            raise ValueError(f"flow_refinement must be one of {', '.join(FLOW_REFINEMENTS)}, "
                             f"got {self.flow_refinement!r}")


def engine_bytes_estimate(spec: ModelSpec, height: int, width: int) -> int:
    """Rough memory of an engine at ``height`` x ``width``: :data:`ACTIVATION_FACTOR` x its I/O tensor bytes."""
    io = [t.resolved(height, width) for t in (*spec.inputs, *spec.outputs)]
    return ACTIVATION_FACTOR * sum(int(np.prod(t.concrete_shape)) * np.dtype(t.dtype).itemsize for t in io)


class _EngineStage:
    """Engines of one network, one per network input size, in a bounded LRU; fallback remembered."""

    def __init__(self, spec: ModelSpec, config: NetworkConfig) -> None:
        self.config = config
        self.spec = spec
        self._engines: OrderedDict[tuple[int, int], Engine] = OrderedDict()
        self._engine_bytes: dict[tuple[int, int], int] = {}
        self.failed_backends: dict[str, str] = {}  # option label -> why it failed (never retried)

    def engine(self, width: int, height: int) -> Engine:
        """The engine for a ``width`` x ``height`` network input (created on first use, kept in the LRU)."""
        key = (width, height)
        if key in self._engines:
            self._engines.move_to_end(key)
            return self._engines[key]
        engine = create_engine(self.spec, height, width, self.config.engine, failed=self.failed_backends)
        self._engines[key] = engine
        self._engine_bytes[key] = engine_bytes_estimate(self.spec, height, width)
        budget = self.config.max_engine_mib << 20
        while len(self._engines) > 1 and (len(self._engines) > self.config.max_engines
                                          or sum(self._engine_bytes.values()) > budget):
            evicted, _ = self._engines.popitem(last=False)
            del self._engine_bytes[evicted]
            LOG.info("%s: dropped the engine for %dx%d (least recently used)", self.spec.name, *evicted)
        return engine

    def describe(self) -> dict[str, str]:
        """Diagnostics: the engine in use, the kept engines' sizes and any backend that failed.

        Keys ``<model>_backend``, ``_device``, ``_precision``, ``_engines`` (``WxH``, least recently
        used first) and ``_fallback`` (option: reason).
        """
        values: dict[str, str] = {}
        if self.failed_backends:
            values[f"{self.spec.name}_fallback"] = "; ".join(f"{k}: {v}" for k, v in self.failed_backends.items())
        if not self._engines:
            return values
        engine = next(reversed(self._engines.values()))
        values.update({f"{self.spec.name}_backend": engine.backend, f"{self.spec.name}_device": engine.device,
                       f"{self.spec.name}_precision": engine.precision,
                       f"{self.spec.name}_engines": ",".join(f"{w}x{h}" for w, h in self._engines)})
        return values


class _CardStage(_EngineStage):
    """A depth or flow network bound to its card, its outputs checked on a golden input.

    A user's ONNX is checked at start on the fp32 CPU reference engine (ONNX Runtime, else torch),
    so broken weights are refused before the first frame without building a GPU engine for a size
    that may never be used; the first engine of every stage is checked too (e.g. an fp16 engine
    that overflows).
    """

    def __init__(self, task: str, config: NetworkConfig) -> None:
        self.model: BoundModel = bind_model(card_for_model(task, config.model_path, config.card), config.model_path)
        super().__init__(self.model.spec, config)
        self._checked = False
        if config.model_path.endswith(".onnx"):
            height, width = golden_plan(self.model.card, config.input_width).padded
            try:
                reference = reference_engine(self.spec, onnx_bytes_for(self.spec, height, width), height, width)
            except InferenceError as err:  # an ONNX no runtime can load: one line at start, like a card mismatch
                raise CardError(f"model_{task}: {err}") from None
            self._check(reference, height, width)

    def _check(self, engine: Engine, height: int, width: int) -> None:
        """Run ``engine`` on the golden input at ``height`` x ``width``; CardError (one line) if implausible."""
        check_golden_outputs(self.model, engine.infer(self.spec.make_inputs(height, width)),
                             f"model {self.model.card.key} ({engine.backend}-{engine.device}, {engine.precision})")

    def engine(self, width: int, height: int) -> Engine:
        """The engine at ``width`` x ``height``; the stage's first one is checked on a golden input."""
        engine = super().engine(width, height)
        if not self._checked:
            self._check(engine, height, width)
            self._checked = True
        return engine

    def describe(self) -> dict[str, str]:
        """The engine description plus the model card in use."""
        return {**super().describe(), f"{self.spec.name}_card": self.model.card.key}


class DepthStage(_CardStage):
    """Frame -> depth and its standard deviation at the frame's resolution, per the model card.

    The network size follows the card: a fixed size, a pixel area (the shipped network runs at the
    pixel count it was trained at, aspect kept: a CNN sees objects at a different pixel size at
    another resolution, and its metric depth degrades fast away from the trained scale, AbsRel
    0.33 at 192 px vs 1.6 at 320 px on a synthetic room), or ``input_width``.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__("depth", config)

    def __call__(self, frame: Frame) -> DepthResult:
        """Depth (H, W) float32 (metres when ``is_metric``, else relative) and std (H, W) float32, same units."""
        k = frame.intrinsics
        plan = plan_input(self.model.card.size, k.height, k.width, self.config.input_width)
        engine = self.engine(plan.padded[1], plan.padded[0])
        inputs = model_inputs(self.model.card, self.model.names, {"image": frame.image}, plan, k)
        depth, std, is_metric = depth_from_outputs(self.model, engine.infer(inputs), plan, k)
        return DepthResult(depth=depth, std=std, intrinsics=k, is_metric=is_metric)


class FlowStage(_CardStage):
    """Frame -> optical flow from the previous frame, at the frame's resolution, per the model card.

    ``refine`` says whether the network runs (:attr:`NetworkConfig.flow_refinement`, resolved when
    the stage is created); without it the flow is the card's ``flow_init`` input itself (seeded
    DIS of the resized images), restored to source pixels exactly as the network's output would be.

    On a CUDA engine the inputs go up once through pinned buffers on the shared stream
    (:class:`~geovis_ros.inference.gpu.DeviceStream`) and the frame's ``image2`` tensor stays on the
    GPU as the next frame's ``image1``; the network-size flow comes down with one wait.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__("flow", config)
        self._previous: tuple[int, NDArray[np.uint8]] | None = None
        self.refine = resolve_flow_refinement(config, self.spec, "flow_init" in self.model.names)
        # The image2 tensor of the last frame (its image, plan, tensor: numpy, or on the engine's GPU):
        # the next frame's image1 when the card normalises both images alike, so the previous frame
        # is neither normalised nor uploaded twice.
        self._image2_tensor: tuple[NDArray[np.uint8], ResizePad, Any] | None = None
        self._gpu: DeviceStream | None = None
        image_cards = {c.role: c for c in self.model.card.inputs if c.role in ("image1", "image2")}
        self._reuse_image2 = len(image_cards) == 2 and replace(
            image_cards["image1"], ref=image_cards["image2"].ref, role="image2") == image_cards["image2"]

    def reset(self) -> None:
        """Forget the previous frame."""
        self._previous = None
        self._image2_tensor = None

    def __call__(self, frame: Frame) -> FlowResult | None:
        """Flow (H, W, 2) float32 px previous -> this frame; None for the first frame of a stream."""
        previous, self._previous = self._previous, (frame.stamp_ns, frame.image)
        if previous is None or previous[1].shape != frame.image.shape:
            return None
        k = frame.intrinsics
        plan = plan_input(self.model.card.size, k.height, k.width, self.config.input_width)
        images = {"image1": previous[1], "image2": frame.image}
        if self.refine:
            cached = self._image2_tensor
            ready = {"image1": cached[2]} if cached is not None and cached[0] is previous[1] and cached[1] == plan \
                else {}
            engine = self.engine(plan.padded[1], plan.padded[0])
            inputs = model_inputs(self.model.card, self.model.names, images, plan, k, ready)
            if engine.device.startswith("cuda"):
                outputs, inputs = self._infer_on_gpu(engine, inputs)
            else:
                outputs = engine.infer(inputs)
            if self._reuse_image2:
                self._image2_tensor = (frame.image, plan, inputs[self.model.names["image2"]])
        else:
            outputs = {self.model.names["flow"]: flow_init_input(images, plan)}
        return FlowResult(flow=flow_from_outputs(self.model, outputs, plan), previous_stamp_ns=previous[0])

    def _infer_on_gpu(self, engine: Engine, inputs: Mapping[str, Any],
                      ) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
        """Run a CUDA ``engine``: (host outputs, the inputs as uploaded to its device), one wait for the outputs."""
        if self._gpu is None or str(self._gpu.device) != engine.device:
            self._gpu = DeviceStream(engine.device)
        with self._gpu.running():
            uploaded = self._gpu.upload(inputs)
            return self._gpu.download(engine.infer(uploaded)), uploaded

    def describe(self) -> dict[str, str]:
        """The engine description plus ``flow_refinement``: ``network`` or ``initialisation`` (what runs).

        Without the network, ``flow_backend`` / ``flow_device`` name what computes the flow: OpenCV
        DIS on the CPU.
        """
        if self.refine:
            return {**super().describe(), "flow_refinement": "network"}
        return {**super().describe(), "flow_backend": "opencv-dis", "flow_device": "cpu",
                "flow_refinement": "initialisation"}


def resolve_flow_refinement(config: NetworkConfig, spec: ModelSpec, has_flow_init: bool) -> bool:
    """Whether the flow network runs, per ``config.flow_refinement`` (True: ``network``).

    ``auto``: True when the first usable backend option for ``spec`` (:func:`backend_order`) is on
    a GPU, or when nothing is usable (the engine's creation then reports why). A network without a
    ``flow_init`` input has no initialisation to return: always True, and ``initialisation`` is
    refused with a CardError naming the setting.
    """
    if not has_flow_init:
        if config.flow_refinement == "initialisation":
            raise CardError(f"flow_refinement initialisation: model {spec.name} has no flow_init input, so it has "
                            "no initialisation to return; use auto or network")
        return True
    if config.flow_refinement != "auto":
        return config.flow_refinement == "network"
    usable = [option for option, reason in backend_order(config.engine, spec) if reason is None]
    return not usable or usable[0].device == "cuda"


class PoseStage(_EngineStage):
    """Frame -> the pose network's relative motion since the previous frame (odometry's initial guess).

    The shipped network runs at its training size (``MODEL_INFO["pose"].default_size``, images
    resized to it); a user model at ``input_width`` with the image's aspect ratio.
    """

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__(spec_for_file("pose", config.model_path), config)
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


__all__ = ["FLOW_REFINEMENTS", "DepthStage", "FlowStage", "NetworkConfig", "PoseStage", "module_infer",
           "resolve_flow_refinement"]
