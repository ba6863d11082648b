"""A model card bound to its network, and the card-driven pre/post-processing (one implementation).

:func:`bind_model` checks a card against the ONNX graph (every input has a role; names, ranks,
dtypes, channel counts and fixed sizes agree) or against the shipped network, and gives a
:class:`BoundModel`: the card, the :class:`~geovis_ros.inference.engine.ModelSpec` the engines run,
and the ONNX tensor name of every role. A mismatch raises :class:`~geovis_ros.models.cards.CardError`
with one line naming the card field and the tensor.

Per frame, explicit steps: :func:`plan_input` (network size from the card's size rules),
:func:`image_input` (resize, channel order, ``value_range``/mean/std, layout, pad),
:func:`network_intrinsics`; then :func:`depth_from_outputs` (crop the padding, resize back, output
kind -> metres, or a relative depth flagged not metric) or :func:`flow_from_outputs` (crop, resize
back, rescale to source pixels). :func:`check_golden_outputs` refuses a model whose outputs on a
golden input are not finite or not plausible (e.g. NaN weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.inference.engine import InferenceError, InputGenerator, ModelSpec, TensorSpec
from geovis_ros.inference.export import spec_from_onnx
from geovis_ros.inference.preprocess import ResizePad, padded_size, restore_flow, unpad_and_resize
from geovis_ros.inference.registry import spec_for_file
from geovis_ros.models.cards import IMAGE_ROLES, CardError, InputCard, ModelCard, SizeCard, TensorRef
from geovis_ros.models.flow import initial_flow

LOG_VAR_CLIP = (-20.0, 10.0)
BUCKET_PX = 32  # dynamic network widths snap to multiples of about this many pixels
GOLDEN_SIZE = (240, 320)  # (height, width) of the golden image when the card does not fix one


@dataclass(frozen=True)
class BoundModel:
    """A card bound to a runnable network.

    Attributes:
        card: the validated card.
        spec: the network as the engines see it (inputs in ONNX order; the outputs the card uses).
        names: role (``image``, ``image1``, ``image2``, ``flow_init``, ``intrinsics``, ``depth``,
            ``uncertainty``, ``flow``) -> ONNX tensor name.

    """

    card: ModelCard
    spec: ModelSpec
    names: dict[str, str]


# -- binding ------------------------------------------------------------------------------------
def _resolve(ref: TensorRef, tensors: tuple[TensorSpec, ...], field: str, card: ModelCard, what: str) -> TensorSpec:
    names = [t.name for t in tensors]
    if ref.name is not None:
        if ref.name not in names:
            raise CardError(f"model card {card.key}: {field}: the model has no {what} {ref.name!r} "
                            f"(its {what}s: {names})")
        return tensors[names.index(ref.name)]
    assert ref.index is not None
    if not -len(tensors) <= ref.index < len(tensors):
        raise CardError(f"model card {card.key}: {field}: index {ref.index} is out of range, the model has "
                        f"{len(tensors)} {what}s {names}")
    return tensors[ref.index]


def _expect(card: ModelCard, field: str, tensor: TensorSpec, ranks: tuple[int, ...], dtypes: tuple[str, ...],
            channels: tuple[int, int] | None = None) -> None:
    """CardError unless ``tensor`` has one of ``ranks`` and ``dtypes`` and (axis, count) ``channels``."""
    problem = None
    if len(tensor.shape) not in ranks:
        problem = f"has rank {len(tensor.shape)} {tensor.shape}, expected rank {' or '.join(map(str, ranks))}"
    elif tensor.dtype not in dtypes:
        problem = f"has dtype {tensor.dtype}, expected {' or '.join(dtypes)}"
    elif channels is not None and isinstance(tensor.shape[channels[0]], int) and \
            tensor.shape[channels[0]] != channels[1]:
        problem = f"has {tensor.shape[channels[0]]} channels {tensor.shape}, expected {channels[1]}"
    if problem:
        raise CardError(f"model card {card.key}: {field}: tensor {tensor.name!r} {problem}")


def _spatial_axes(card_input: InputCard | None, rank: int) -> tuple[int, int]:
    return (1, 2) if card_input is not None and card_input.layout == "NHWC" else (rank - 2, rank - 1)


def _check_fixed_size(card: ModelCard, tensor: TensorSpec, card_input: InputCard, field: str) -> None:
    axes = _spatial_axes(card_input, 4)
    dims = tuple(tensor.shape[a] for a in axes)
    static = all(isinstance(d, int) for d in dims)
    if static and card.size.fixed is None:
        raise CardError(f"model card {card.key}: size.fixed: input {tensor.name!r} ({field}) has the fixed size "
                        f"{dims[0]}x{dims[1]} (HxW); use a card file with size: {{fixed: [{dims[0]}, {dims[1]}]}} "
                        "(it may start from a preset: base: NAME)")
    if static and card.size.fixed is not None and tuple(card.size.fixed) != dims:
        raise CardError(f"model card {card.key}: size.fixed: is {list(card.size.fixed)} but input {tensor.name!r} "
                        f"is {dims[0]}x{dims[1]} (HxW)")


def _symbolic(tensor: TensorSpec, card_input: InputCard | None) -> TensorSpec:
    """``tensor`` with its spatial axes as ``height``/``width`` (unless fixed) and other free axes 1."""
    rank = len(tensor.shape)
    if rank < 2:
        return tensor
    axes = _spatial_axes(card_input, rank)
    shape = list(tensor.shape)
    for axis, symbol in zip(axes, ("height", "width"), strict=True):
        if not isinstance(shape[axis], int):
            shape[axis] = symbol
    for axis, dim in enumerate(shape):
        if isinstance(dim, str) and axis not in axes:
            shape[axis] = 1  # batch and other free axes
    return TensorSpec(tensor.name, tuple(shape), tensor.dtype)


def bind_model(card: ModelCard, model_path: str = "") -> BoundModel:
    """Check ``card`` against the network at ``model_path`` ("" = shipped weights) and bind them.

    ``.safetensors``: weights for the shipped architecture (checked against the shipped network's
    tensors). ``.onnx``: the graph's inputs/outputs are read and checked. Raises CardError (one
    line, naming the field; also for another suffix) or FileNotFoundError.
    """
    path = Path(model_path).expanduser() if model_path else None
    if path is not None and path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"model_{card.task}: no such file {path}")
        try:
            base = spec_from_onnx(path, card.task)
        except InferenceError as err:  # not an ONNX file: refused like a card that does not fit
            raise CardError(f"model_{card.task}: {err}") from None
    else:
        base = spec_for_file(card.task, model_path)
    names: dict[str, str] = {}
    inputs: list[TensorSpec | None] = [None] * len(base.inputs)
    for i, card_input in enumerate(card.inputs):
        field = f"inputs[{i}]"
        tensor = _resolve(card_input.ref, base.inputs, field, card, "input")
        position = [t.name for t in base.inputs].index(tensor.name)
        if card_input.role in IMAGE_ROLES:
            channel_axis = 3 if card_input.layout == "NHWC" else 1
            _expect(card, field, tensor, (4,), ("float32",), (channel_axis, 3))
            _check_fixed_size(card, tensor, card_input, field)
        elif card_input.role == "flow_init":
            _expect(card, field, tensor, (4,), ("float32",), (1, 2))
        else:
            _expect(card, field, tensor, (2,), ("float32",), (1, 4))
        names[card_input.role] = tensor.name
        inputs[position] = _symbolic(tensor, card_input)
    missing = [t.name for t, bound in zip(base.inputs, inputs, strict=True) if bound is None]
    if missing:
        raise CardError(f"model card {card.key}: inputs: the model's input(s) {missing} have no role in the card")
    outputs: list[TensorSpec] = []
    rules = {"depth": ((3, 4), (1, 1)), "uncertainty": ((3, 4), (1, 1)), "flow": ((4,), (1, 2))}
    for role, ref in card.output_refs.items():
        field = f"outputs.{role}"
        tensor = _resolve(ref, base.outputs, field, card, "output")
        ranks, channels = rules[role]
        _expect(card, field, tensor, ranks, ("float32", "float16"),
                channels if len(tensor.shape) == 4 else None)
        names[role] = tensor.name
        if tensor.name not in [t.name for t in outputs]:
            outputs.append(_symbolic(tensor, None))
    spec = replace(base, inputs=tuple(t for t in inputs if t is not None), outputs=tuple(outputs),
                   spatial_multiple=card.size.multiple, input_generator=_golden_generator(card, names))
    return BoundModel(card, spec, names)


# -- pre-processing -----------------------------------------------------------------------------
def snap_width(width: float, multiple: int) -> int:
    """A dynamic network width (px) snapped to a bucket: a multiple of ``multiple`` near :data:`BUCKET_PX`."""
    step = multiple * max(1, round(BUCKET_PX / multiple))
    return max(step, math.floor(width / step + 0.5) * step)


def plan_input(size: SizeCard, height: int, width: int, target_width: int) -> ResizePad:
    """How an ``height`` x ``width`` image becomes the network input, per the card's size rules.

    ``target_width``: the network width (px) wanted when the card does not fix the size and has no
    ``area``; snapped to a bucket (:func:`snap_width`) so nearby image sizes share one engine.
    Returns sizes as (height, width): ``resized`` (the image after resizing) and ``padded``
    (the network input).
    """
    m = size.multiple
    if size.fixed is not None:
        fixed_h, fixed_w = size.fixed
        if size.resize == "stretch":
            return ResizePad((height, width), (fixed_h, fixed_w), (fixed_h, fixed_w))
        scale = min(fixed_h / height, fixed_w / width)
        resized = (min(fixed_h, max(1, round(height * scale))), min(fixed_w, max(1, round(width * scale))))
        return ResizePad((height, width), resized, (fixed_h, fixed_w))
    if size.area is not None:
        target = math.sqrt(size.area[0] * size.area[1] * width / height)
    else:
        target = float(target_width)
    net_w = snap_width(target, m)
    if size.resize == "pad":
        resized = (max(1, round(net_w * height / width)), net_w)
        return ResizePad((height, width), resized, padded_size(*resized, m))
    net_h = max(m, int(round(net_w * height / width / m)) * m)
    return ResizePad((height, width), (net_h, net_w), (net_h, net_w))


def resized_image(rgb: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    """(H, W, 3) uint8 resized to ``size`` (height, width): area interpolation when shrinking, else bilinear."""
    h, w = size
    if (h, w) == rgb.shape[:2]:
        return rgb
    shrink = h * w < rgb.shape[0] * rgb.shape[1]
    return np.asarray(cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR),
                      dtype=np.uint8)


def image_input(card_input: InputCard, rgb: NDArray[np.uint8], plan: ResizePad, pad: str = "edge",
                ) -> NDArray[np.float32]:
    """(H, W, 3) uint8 RGB -> the network's image tensor (1, 3, h, w) or (1, h, w, 3) float32.

    Resize to ``plan.resized`` (area interpolation when shrinking, bilinear when enlarging),
    channel order, ``value_range`` / mean / std, pad bottom/right to ``plan.padded`` (``pad``:
    ``edge`` replication, or ``mean``: the mean colour, 0 after normalisation), layout.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise CardError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    rgb = resized_image(rgb, plan.resized)
    pixels = rgb[..., ::-1] if card_input.channels == "BGR" else rgb
    scale = np.float32(card_input.value_range / 255.0)
    mean = np.asarray(card_input.mean, np.float32)
    std = np.asarray(card_input.std, np.float32)
    values = (pixels.astype(np.float32) * scale - mean) / std
    pad_h, pad_w = plan.pad_bottom, plan.pad_right
    if pad_h or pad_w:
        values = np.pad(values, ((0, pad_h), (0, pad_w), (0, 0)), mode="constant" if pad == "mean" else "edge")
    tensor = values[None] if card_input.layout == "NHWC" else values.transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor, dtype=np.float32)


def network_intrinsics(intrinsics: Intrinsics, plan: ResizePad) -> Intrinsics:
    """Intrinsics of the network input: scaled with the resize; bottom/right padding changes nothing else."""
    resized = intrinsics.resized(plan.resized[1], plan.resized[0])
    return replace(resized, width=plan.padded[1], height=plan.padded[0])


def flow_init_input(images: Mapping[str, NDArray[np.uint8]], plan: ResizePad) -> NDArray[np.float32]:
    """The ``flow_init`` tensor (1, 2, h, w) float32, network pixels: seeded DIS of the resized images, edge-padded.

    ``images``: role (``image1``, ``image2``) -> (H, W, 3) uint8 RGB. The same layout as a flow
    network's output, so :func:`flow_from_outputs` turns either into source pixels.
    """
    first, second = (resized_image(images[r], plan.resized) for r in ("image1", "image2"))
    flow = np.pad(initial_flow(first, second), ((0, plan.pad_bottom), (0, plan.pad_right), (0, 0)), mode="edge")
    return np.ascontiguousarray(flow.transpose(2, 0, 1)[None], dtype=np.float32)


def model_inputs(card: ModelCard, names: Mapping[str, str], images: Mapping[str, NDArray[np.uint8]],
                 plan: ResizePad, intrinsics: Intrinsics | None = None,
                 ready: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The network inputs for ``images`` (role -> (H, W, 3) uint8 RGB), per the card, keyed by ``names[role]``.

    float32 numpy arrays: ``flow_init`` is the seeded DIS flow of the resized images, edge-padded;
    ``intrinsics`` the network-input intrinsics as (1, 4) float32 fx, fy, cx, cy. ``ready``: role ->
    a tensor this function already made for the same image and ``plan`` (e.g. the previous frame's
    ``image2`` as this frame's ``image1``; numpy, or its copy on the GPU), used as is instead of
    normalising the image again.
    """
    inputs: dict[str, Any] = {}
    for card_input in card.inputs:
        name = names[card_input.role]
        if ready is not None and card_input.role in ready:
            inputs[name] = ready[card_input.role]
        elif card_input.role in IMAGE_ROLES:
            inputs[name] = image_input(card_input, images[card_input.role], plan, card.size.pad)
        elif card_input.role == "flow_init":
            inputs[name] = flow_init_input(images, plan)
        else:
            if intrinsics is None:
                raise CardError(f"model card {card.key}: the model takes intrinsics but none were given")
            k = network_intrinsics(intrinsics, plan)
            inputs[name] = np.array([[k.fx, k.fy, k.cx, k.cy]], np.float32)
    return inputs


# -- post-processing ----------------------------------------------------------------------------
def _plane(output: Any, plan: ResizePad) -> NDArray[np.float32]:
    """A (1, 1, h, w) / (1, h, w) / (h, w) output -> (1, 1, H, W) float32 at the source size."""
    array = np.asarray(output, dtype=np.float32)
    array = array.reshape((1, 1, *array.shape[-2:]))
    if tuple(array.shape[2:]) != plan.padded:  # a network that predicts at another resolution
        array = cv2.resize(array[0, 0], (plan.padded[1], plan.padded[0]), interpolation=cv2.INTER_LINEAR)[None, None]
    return np.asarray(unpad_and_resize(array, plan), dtype=np.float32)


def depth_from_outputs(bound: BoundModel, outputs: Mapping[str, Any], plan: ResizePad,
                       intrinsics: Intrinsics) -> tuple[NDArray[np.float32], NDArray[np.float32], bool]:
    """Network outputs -> (depth (H, W) float32, std (H, W) float32, is_metric) at the source size.

    Metric kinds give metres: ``metric_depth`` (times fx_network / canonical_fx when the card has
    a canonical focal length), ``disparity`` (fx_network * baseline_m / disparity, disparity in
    network pixels). Relative kinds give a positive depth-like quantity in relative units with
    median 1 over the valid pixels, ``is_metric`` False: ``relative_inverse_depth`` v becomes
    median(v) / v (so 1 / depth is the network's inverse depth over its median, still affine-related
    to the true inverse depth), ``relative_depth`` v becomes v / median(v). Non-positive values,
    values beyond ``max_depth`` and non-finite values are NaN. std: from the uncertainty output
    (log variance of ln depth: depth * exp(log_var / 2)), else ``relative_std`` * depth.
    """
    card = bound.card
    assert card.depth is not None
    out = card.depth
    raw = _plane(outputs[bound.names["depth"]], plan)[0, 0]
    fx_network = intrinsics.fx * plan.resized[1] / plan.source[1]
    valid = np.isfinite(raw) & (raw > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if out.kind == "metric_depth":
            depth = raw * np.float32(fx_network / out.canonical_fx) if out.canonical_fx else raw
        elif out.kind == "disparity":
            depth = np.float32(fx_network * (out.baseline_m or 0.0)) / raw
        else:
            median = np.float32(np.median(raw[valid])) if valid.any() else np.float32(1.0)
            depth = median / raw if out.kind == "relative_inverse_depth" else raw / median
    if out.max_depth is not None and out.is_metric:
        valid &= depth <= out.max_depth
    depth = np.where(valid, depth, np.nan).astype(np.float32)
    if card.uncertainty is not None:
        log_var = np.clip(_plane(outputs[bound.names["uncertainty"]], plan)[0, 0], *LOG_VAR_CLIP)
        std = (depth * np.exp(0.5 * log_var)).astype(np.float32)
    else:
        std = (depth * np.float32(out.relative_std)).astype(np.float32)
    return depth, std, out.is_metric


def flow_from_outputs(bound: BoundModel, outputs: Mapping[str, Any], plan: ResizePad) -> NDArray[np.float32]:
    """Network flow (1, 2, h, w) in network pixels -> (H, W, 2) float32 in source pixels."""
    flow = np.asarray(outputs[bound.names["flow"]], dtype=np.float32)
    if tuple(flow.shape[2:]) != plan.padded:
        raise CardError(f"model card {bound.card.key}: outputs.flow: {bound.names['flow']!r} is "
                        f"{tuple(flow.shape)}, expected the network input size {plan.padded}")
    restored = np.asarray(restore_flow(flow, plan), dtype=np.float32)
    return np.ascontiguousarray(restored[0].transpose(1, 2, 0))


# -- golden check -------------------------------------------------------------------------------
def golden_image(height: int, width: int, seed: int = 0) -> NDArray[np.uint8]:
    """A smooth, textured (H, W, 3) uint8 RGB image: blurred noise plus a gradient, reproducible per seed."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (max(2, height // 8), max(2, width // 8), 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(-40, 40, width, dtype=np.float32)[None, :, None]
    return np.clip(smooth + ramp + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)


def golden_plan(card: ModelCard, target_width: int) -> ResizePad:
    """The plan of the golden image: the card's fixed size, else a 4:3 image at ``target_width``."""
    height, width = card.size.fixed or GOLDEN_SIZE
    return plan_input(card.size, height, width, target_width)


def _golden_generator(card: ModelCard, names: Mapping[str, str]) -> InputGenerator:
    """Golden inputs through the card's own normalisation: a textured image (shifted 2 px for flow)."""
    def generate(shapes: Mapping[str, tuple[int, ...]], rng: np.random.Generator) -> dict[str, NDArray[Any]]:
        image_shape = shapes[names["image" if card.task == "depth" else "image1"]]
        layout_nhwc = next(i for i in card.inputs if i.role in IMAGE_ROLES).layout == "NHWC"
        h, w = image_shape[1:3] if layout_nhwc else image_shape[2:4]
        plan = ResizePad((h, w), (h, w), (h, w))
        rgb = golden_image(h, w, int(rng.integers(1 << 31)))
        images = {"image": rgb, "image1": rgb, "image2": np.roll(rgb, 2, axis=1)}
        k = Intrinsics(0.8 * w, 0.8 * w, (w - 1) / 2, (h - 1) / 2, w, h)
        return dict(model_inputs(card, names, images, plan, k))
    return generate


def check_golden_outputs(bound: BoundModel, outputs: Mapping[str, Any], what: str) -> None:
    """Refuse (CardError) outputs on a golden input that are not finite or not plausible.

    Every output the card uses must be at least 99 % finite; depth-like outputs must be positive
    on at least 1 % of the pixels; flow must stay within 10 image diagonals.
    """
    for role, name in bound.names.items():
        if role not in ("depth", "uncertainty", "flow"):
            continue
        values = np.asarray(outputs[name], dtype=np.float64)
        finite = float(np.isfinite(values).mean()) if values.size else 0.0
        problem = None
        if finite < 0.99:
            problem = f"is {100 * (1 - finite):.0f}% NaN/inf (broken or NaN weights?)"
        elif role == "depth" and float((values > 0).mean()) < 0.01:
            problem = "is not positive anywhere (not a depth-like output?)"
        elif role == "flow":
            diagonal = math.hypot(*values.shape[-2:])
            if float(np.abs(values).max()) > 10 * diagonal:
                problem = f"reaches {float(np.abs(values).max()):.3g} px on a {diagonal:.0f} px diagonal image"
        if problem:
            raise CardError(f"{what}: output {name!r} ({role}) on a golden input {problem}; refusing the model")
