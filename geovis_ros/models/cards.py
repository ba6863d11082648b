"""Model cards: a network's inputs, normalisation, size rules and output kinds, as validated data.

A model is a weights/ONNX file plus a card. Cards are YAML (schema below); the presets, the shipped
networks' cards included, live in ``model_cards.yaml`` beside this module, each citing the upstream
code its numbers come from. :func:`load_card` takes a preset name or a path; :func:`card_for_model`
finds the card of a model file (an explicit card, else ``<model>.yaml`` beside an ONNX file, else
the shipped network's card). Every error names the offending field (``inputs[0].mean: ...``).

Schema (one mapping per card):

- ``name`` (str), ``task`` (``depth`` | ``flow``), ``licence`` (str), ``source`` (str, optional);
  a card file may instead start with ``base: PRESET`` and give only the fields it changes.
- ``inputs``: list of tensors, each addressed by ``name`` or ``index`` (position among the ONNX
  inputs), with a ``role``: ``image`` (depth), ``image1`` / ``image2`` (flow: previous, current),
  ``flow_init`` (a classical initial flow, (1, 2, H, W) float32 px), ``intrinsics`` ((1, 4) float32
  fx, fy, cx, cy in pixels of the network input). Image roles also give ``channels`` (``RGB`` |
  ``BGR``), ``value_range`` (1: the network sees pixel / 255; 255: raw 0-255 values), ``mean``,
  ``std`` (3 numbers each, in ``value_range`` units; defaults 0 and 1) and ``layout`` (``NCHW`` |
  ``NHWC``).
- ``size``: ``multiple`` (network height and width are multiples of it), ``resize``
  (``keep_aspect``: resized so the width is near the target and both sides are rounded to the
  multiple, a slight stretch, as Depth Anything and MiDaS do; ``pad``: resized keeping the aspect
  exactly, then padded bottom/right to the multiple or to ``fixed``; ``stretch``: resized to the
  size, aspect not kept), ``fixed`` ([height, width] for a static-shape export), ``width`` (the
  upstream network width, px, used when the caller gives none), ``area`` ([width, height]: run at
  this pixel count whatever the aspect, for a CNN trained at one scale), ``pad`` (``edge`` |
  ``mean``: what fills the padding).
- depth cards: ``outputs.depth`` (``name`` | ``index``; ``kind``: ``metric_depth`` (metres),
  ``relative_inverse_depth`` (affine-invariant, larger = closer), ``relative_depth`` (depth up to
  scale), ``disparity`` (pixels, needs ``baseline_m``); ``canonical_fx``: metric depth predicted for
  a camera of this focal length (px) and scaled by fx / canonical_fx; ``max_depth``: metres, larger
  values are invalid; ``relative_std``: the standard deviation of depth as a fraction of depth when
  the model gives no uncertainty, default 0.1) and optionally ``outputs.uncertainty`` (``name`` |
  ``index``, ``kind: log_variance_log_depth``).
- flow cards: ``outputs.flow`` (``name`` | ``index``, -1 = the last output, for exports that
  return the list of refinements; ``units: pixels``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from geovis_ros.errors import GeovisError

PRESETS_FILE = Path(__file__).with_name("model_cards.yaml")
TASKS = ("depth", "flow")
IMAGE_ROLES = ("image", "image1", "image2")
ROLES = (*IMAGE_ROLES, "flow_init", "intrinsics")
TASK_ROLES = {"depth": ("image", "intrinsics"), "flow": ("image1", "image2", "flow_init")}
REQUIRED_ROLES = {"depth": ("image",), "flow": ("image1", "image2")}
RESIZE_POLICIES = ("keep_aspect", "pad", "stretch")
PAD_MODES = ("edge", "mean")
DEPTH_KINDS = ("metric_depth", "relative_inverse_depth", "relative_depth", "disparity")
UNCERTAINTY_KINDS = ("log_variance_log_depth",)
SHIPPED_CARDS = {"depth": "geovis_depth", "flow": "geovis_flow"}


class CardError(GeovisError, ValueError):
    """A malformed card, an unknown preset, or a card that does not fit its model; the message names the field."""


@dataclass(frozen=True)
class TensorRef:
    """An ONNX tensor by ``name``, or by ``index`` among the graph's inputs/outputs (negative: from the end)."""

    name: str | None = None
    index: int | None = None


@dataclass(frozen=True)
class InputCard:
    """One network input: where it is, what it carries, and (images) how pixels become values.

    The network sees ``(pixel * value_range / 255 - mean) / std`` per channel, in ``channels`` order.
    """

    ref: TensorRef
    role: str
    channels: str = "RGB"
    value_range: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"


@dataclass(frozen=True)
class SizeCard:
    """Network input size rules (see the module docstring). ``fixed`` is (height, width), ``area`` (width, height)."""

    multiple: int = 1
    resize: str = "pad"
    fixed: tuple[int, int] | None = None
    width: int | None = None
    area: tuple[int, int] | None = None
    pad: str = "edge"


@dataclass(frozen=True)
class DepthOutputCard:
    """The depth-like output and how it becomes depth (metres, or a relative depth when not metric)."""

    ref: TensorRef
    kind: str
    canonical_fx: float | None = None
    max_depth: float | None = None
    baseline_m: float | None = None
    relative_std: float = 0.1

    @property
    def is_metric(self) -> bool:
        """True when the output converts to metres without scale recovery (metric depth, stereo disparity)."""
        return self.kind in ("metric_depth", "disparity")


@dataclass(frozen=True)
class UncertaintyOutputCard:
    """An optional uncertainty output (``log_variance_log_depth``: log variance of ln depth)."""

    ref: TensorRef
    kind: str = "log_variance_log_depth"


@dataclass(frozen=True)
class FlowOutputCard:
    """The flow output (N, 2, H, W) float32 in network pixels."""

    ref: TensorRef
    units: str = "pixels"


@dataclass(frozen=True)
class ModelCard:
    """A validated card. ``key`` is the preset name or the card file's path."""

    key: str
    name: str
    task: str
    licence: str
    inputs: tuple[InputCard, ...]
    size: SizeCard
    source: str = ""
    depth: DepthOutputCard | None = None
    uncertainty: UncertaintyOutputCard | None = None
    flow: FlowOutputCard | None = None

    @property
    def output_refs(self) -> dict[str, TensorRef]:
        """Output role (``depth``, ``uncertainty``, ``flow``) -> tensor reference, for the outputs the card uses."""
        outputs = {"depth": self.depth, "uncertainty": self.uncertainty, "flow": self.flow}
        return {role: out.ref for role, out in outputs.items() if out is not None}


class _Reader:
    """Typed field access on a YAML mapping; every error names ``where.field``."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        self.source = source
        self.where = where
        if not isinstance(data, Mapping):
            self.fail(f"expected a mapping, got {type(data).__name__}")
        self.data: Mapping[str, Any] = data

    def fail(self, message: str, key: str | None = None) -> Any:
        where = f"{self.where}.{key}" if key and self.where else (key or self.where or "card")
        raise CardError(f"model card {self.source}: {where}: {message}")

    def only(self, *allowed: str) -> None:
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            self.fail(f"unknown field(s) {unknown}; expected some of {list(allowed)}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., choices: Sequence[Any] = ()) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is ...:
                self.fail("is required", key)
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.fail(f"expected {names}, got {value!r}", key)
        if choices and value not in choices:
            self.fail(f"must be one of {list(choices)}, got {value!r}", key)
        return value

    def positive(self, key: str, kind: type, default: Any = ...) -> Any:
        value = self.get(key, kind, default)
        if value is not None and value is not default and not value > 0:
            self.fail(f"must be > 0, got {value!r}", key)
        return value

    def numbers(self, key: str, count: int, default: Any, kind: type = float, positive: bool = False) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        if (not isinstance(value, list) or len(value) != count
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            self.fail(f"expected a list of {count} numbers, got {value!r}", key)
        if kind is int and not all(isinstance(v, int) for v in value):
            self.fail(f"expected {count} integers, got {value!r}", key)
        if positive and not all(v > 0 for v in value):
            self.fail(f"every value must be > 0, got {value!r}", key)
        return tuple(kind(v) for v in value)

    def child(self, key: str) -> _Reader:
        return _Reader(self.data.get(key), f"{self.where}.{key}" if self.where else key, self.source)

    def ref(self) -> TensorRef:
        name = self.get("name", str, None)
        index = self.get("index", int, None)
        if (name is None) == (index is None):
            self.fail("give exactly one of 'name' or 'index'")
        return TensorRef(name, index)


def _input(data: Any, where: str, source: str) -> InputCard:
    r = _Reader(data, where, source)
    r.only("name", "index", "role", "channels", "value_range", "mean", "std", "layout")
    role = r.get("role", str, choices=ROLES)
    value_range = r.get("value_range", float, 1.0)
    if value_range not in (1.0, 255.0):
        r.fail(f"must be 1 (pixels / 255) or 255 (raw pixels), got {value_range!r}", "value_range")
    return InputCard(
        ref=r.ref(), role=role, channels=r.get("channels", str, "RGB", ("RGB", "BGR")), value_range=value_range,
        mean=r.numbers("mean", 3, (0.0, 0.0, 0.0)), std=r.numbers("std", 3, (1.0, 1.0, 1.0), positive=True),
        layout=r.get("layout", str, "NCHW", ("NCHW", "NHWC")))


def _size(r: _Reader) -> SizeCard:
    r.only("multiple", "resize", "fixed", "width", "area", "pad")
    size = SizeCard(multiple=r.positive("multiple", int, 1), resize=r.get("resize", str, "pad", RESIZE_POLICIES),
                    fixed=r.numbers("fixed", 2, None, int, positive=True), width=r.positive("width", int, None),
                    area=r.numbers("area", 2, None, int, positive=True), pad=r.get("pad", str, "edge", PAD_MODES))
    if size.fixed is not None and (size.fixed[0] % size.multiple or size.fixed[1] % size.multiple):
        r.fail(f"{list(size.fixed)} is not a multiple of size.multiple {size.multiple}", "fixed")
    return size


def parse_card(data: Any, key: str, source: str | None = None) -> ModelCard:
    """A :class:`ModelCard` from a parsed YAML mapping; ``key`` names it (preset name or path).

    Raises CardError naming the field (``inputs[1].role``, ``outputs.depth.kind``, ...).
    """
    source = source or key
    r = _Reader(data, "", source)
    r.only("name", "task", "licence", "source", "inputs", "size", "outputs")
    task = r.get("task", str, choices=TASKS)
    raw_inputs = r.get("inputs", list)
    if not raw_inputs:
        r.fail("needs at least one input", "inputs")
    inputs = tuple(_input(item, f"inputs[{i}]", source) for i, item in enumerate(raw_inputs))
    roles = [i.role for i in inputs]
    for i, role in enumerate(roles):
        if role not in TASK_ROLES[task]:
            r.fail(f"role {role!r} is not an input of a {task} model (roles: {list(TASK_ROLES[task])})",
                   f"inputs[{i}].role")
        if roles.index(role) != i:
            r.fail(f"role {role!r} appears twice", f"inputs[{i}].role")
    missing = [role for role in REQUIRED_ROLES[task] if role not in roles]
    if missing:
        r.fail(f"a {task} model needs inputs with roles {missing}", "inputs")
    refs = [i.ref for i in inputs]
    if len(set(refs)) != len(refs):
        r.fail("two inputs address the same tensor", "inputs")
    size = _size(r.child("size")) if "size" in r.data else SizeCard()
    outputs = r.child("outputs")
    depth = uncertainty = flow = None
    if task == "depth":
        outputs.only("depth", "uncertainty")
        d = outputs.child("depth")
        d.only("name", "index", "kind", "canonical_fx", "max_depth", "baseline_m", "relative_std")
        depth = DepthOutputCard(ref=d.ref(), kind=d.get("kind", str, choices=DEPTH_KINDS),
                                canonical_fx=d.positive("canonical_fx", float, None),
                                max_depth=d.positive("max_depth", float, None),
                                baseline_m=d.positive("baseline_m", float, None),
                                relative_std=d.positive("relative_std", float, 0.1))
        if depth.kind == "disparity" and depth.baseline_m is None:
            d.fail("a disparity model needs baseline_m (metres)", "baseline_m")
        if depth.canonical_fx is not None and depth.kind != "metric_depth":
            d.fail(f"canonical focal scaling applies to metric_depth only, not {depth.kind}", "canonical_fx")
        if "uncertainty" in outputs.data:
            u = outputs.child("uncertainty")
            u.only("name", "index", "kind")
            uncertainty = UncertaintyOutputCard(u.ref(), u.get("kind", str, UNCERTAINTY_KINDS[0], UNCERTAINTY_KINDS))
    else:
        outputs.only("flow")
        f = outputs.child("flow")
        f.only("name", "index", "units")
        flow = FlowOutputCard(f.ref(), f.get("units", str, "pixels", ("pixels",)))
    return ModelCard(key=key, name=r.get("name", str), task=task, licence=r.get("licence", str),
                     source=r.get("source", str, ""), inputs=inputs, size=size, depth=depth,
                     uncertainty=uncertainty, flow=flow)


@cache
def _preset_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(PRESETS_FILE.read_text())
    return data


@cache
def presets() -> dict[str, ModelCard]:
    """Preset name -> card, from ``model_cards.yaml`` (the shipped networks' cards included)."""
    return {key: parse_card(value, key, f"preset {key!r}") for key, value in _preset_data().items()}


def _merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` on top; nested mappings merge, other values (lists too) replace."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) \
            else value
    return out


def read_card_file(path: Path) -> ModelCard:
    """The card in a YAML file; CardError if it cannot be read or parsed.

    A card file may start from a preset (``base: depth_anything_v2``) and override fields, e.g.
    ``size: {fixed: [518, 518]}`` for a static-shape export.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CardError(f"model card {path}: cannot read it: {err}") from None
    if isinstance(data, Mapping) and "base" in data:
        base = data["base"]
        if base not in _preset_data():
            raise CardError(f"model card {path}: base: {base!r} is not a preset ({', '.join(_preset_data())})")
        data = _merged(_preset_data()[base], {k: v for k, v in data.items() if k != "base"})
    return parse_card(data, str(path))


def load_card(reference: str, task: str | None = None) -> ModelCard:
    """A preset by name or a card file by path; with ``task``, the card must be for that task."""
    known = presets()
    if reference in known:
        card = known[reference]
    elif Path(reference).expanduser().is_file():
        card = read_card_file(Path(reference).expanduser())
    else:
        raise CardError(f"model card {reference!r}: neither a preset ({', '.join(known)}) nor a file")
    if task is not None and card.task != task:
        raise CardError(f"model card {card.key}: task: is {card.task!r}, but it is used as the {task} model")
    return card


def card_for_model(task: str, model_path: str = "", card: str = "") -> ModelCard:
    """The card of the ``task`` model at ``model_path`` ("" = the shipped network).

    ``card`` (a preset name or a path) wins; else ``<model>.yaml`` beside an ONNX file; else the
    shipped network's card (a ``.safetensors`` file, or an ONNX with the shipped input/output names).
    """
    if card:
        return load_card(card, task)
    path = Path(model_path).expanduser() if model_path else None
    beside = path.with_suffix(".yaml") if path is not None and path.suffix == ".onnx" else None
    if beside is not None and beside.is_file():
        return load_card(str(beside), task)
    return load_card(SHIPPED_CARDS[task], task)
