"""The one inference interface: ``Engine.infer(dict[name, array]) -> dict[name, array]``.

Every backend (TensorRT, PyTorch, ONNX Runtime) implements :class:`Engine`. Tensors are keyed by
the model's ONNX input/output names. Array type follows the inputs: numpy in -> numpy out (host),
any ``torch.Tensor`` in -> ``torch.Tensor`` out on the engine's device, so stages that stay on the
GPU never round-trip through host memory. Returned arrays belong to the caller (never reused).

Models plug in through :class:`ModelSpec`; the shipped ones are listed in
``geovis_ros.inference.registry.MODEL_SPECS`` (see :func:`registered_model_specs`).

Shapes: a dimension is an int or a symbol. The symbols ``"height"`` and ``"width"`` are the
network's spatial size; any other symbol (e.g. ``"batch"``) resolves to 1.
"""

from __future__ import annotations

import importlib
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from geovis_ros.errors import GeovisError

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "tensorrt", "torch", "onnxruntime")
PRECISIONS = ("fp32", "fp16", "int8")
SPATIAL_SYMBOLS = ("height", "width")
REGISTRY_MODULE = "geovis_ros.inference.registry"

Dim = int | str
Shape = tuple[Dim, ...]


class InferenceError(GeovisError, RuntimeError):
    """An engine could not be created or failed to run."""


class BackendUnavailableError(InferenceError):
    """A backend cannot run here (package not installed, no CUDA device, ...); the message says why."""


class EngineValidationError(InferenceError):
    """A freshly built engine disagrees with the reference backend beyond the model's tolerance."""


class InputError(GeovisError, ValueError):
    """``infer`` got inputs that do not match the engine's input specs (names, shapes, dtypes)."""


def require(module_name: str, purpose: str) -> Any:
    """Import an optional dependency, or raise BackendUnavailableError naming the missing package."""
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise BackendUnavailableError(f"{purpose} needs the Python package {module_name!r}, which is not "
                                      f"installed ({err})") from err


def default_engine_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/geovis_ros/engines``, else ``~/.cache/geovis_ros/engines``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geovis_ros" / "engines"


@dataclass(frozen=True)
class TensorSpec:
    """A named input or output tensor: ``shape`` dims are ints or symbols, ``dtype`` a numpy name."""

    name: str
    shape: Shape
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("tensor name must be non-empty")
        np.dtype(self.dtype)  # raises TypeError for an unknown dtype name
        for dim in self.shape:
            if isinstance(dim, int) and dim <= 0:
                raise ValueError(f"tensor {self.name!r}: dimensions must be > 0, got {self.shape}")

    @property
    def is_dynamic(self) -> bool:
        """Whether any dimension is a symbol."""
        return any(isinstance(dim, str) for dim in self.shape)

    def resolved(self, height: int, width: int) -> TensorSpec:
        """The spec with every symbol replaced by its size at a ``height`` x ``width`` network input."""
        sizes = {"height": int(height), "width": int(width)}
        return TensorSpec(self.name, tuple(sizes.get(d, 1) if isinstance(d, str) else d for d in self.shape),
                          self.dtype)

    def shape_with(self, bound: Mapping[str, int]) -> tuple[int, ...] | None:
        """The concrete shape given sizes bound to symbols; None if a symbol is unbound."""
        if any(isinstance(d, str) and d not in bound for d in self.shape):
            return None
        return tuple(bound[d] if isinstance(d, str) else d for d in self.shape)

    @property
    def concrete_shape(self) -> tuple[int, ...]:
        """The shape as ints; raises ValueError if a dimension is still symbolic."""
        if self.is_dynamic:
            raise ValueError(f"tensor {self.name!r} has symbolic dimensions {self.shape}")
        return tuple(int(d) for d in self.shape)


@dataclass(frozen=True)
class EngineConfig:
    """How to run a model. Frozen; built from ROS parameters or CLI flags by the caller.

    backend: ``auto`` picks tensorrt > torch-cuda > onnxruntime-cpu > torch-cpu by availability.
    device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
    precision: ``fp32`` | ``fp16`` | ``int8`` (int8: TensorRT only). A backend that cannot honour it
        runs fp32 and reports that in ``Engine.precision``.
    allow_fallback: if the chosen backend cannot start or its engine fails the build-time numerical
        check, use the next one in the auto order instead of raising.
    num_threads: CPU intra-op threads; 0 = physical cores available to this process.
    torch_compile: wrap torch modules in ``torch.compile`` (CUDA graphs on CUDA).
    workspace_mib: TensorRT builder workspace pool limit.
    int8_calibration_cache: TensorRT INT8 calibration cache file (read if present, written after
        calibration).
    lock_timeout_s: how long to wait for another process building the same engine.
    """

    backend: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    allow_fallback: bool = True
    engine_cache_dir: Path = field(default_factory=default_engine_cache_dir)
    num_threads: int = 0
    torch_compile: bool = False
    workspace_mib: int = 1024
    int8_calibration_cache: Path | None = None
    lock_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0 = physical cores), got {self.num_threads}")
        if self.workspace_mib <= 0:
            raise ValueError(f"workspace_mib must be > 0, got {self.workspace_mib}")
        if self.lock_timeout_s <= 0:
            raise ValueError(f"lock_timeout_s must be > 0, got {self.lock_timeout_s}")


InputGenerator = Callable[[Mapping[str, tuple[int, ...]], np.random.Generator], dict[str, NDArray[Any]]]


@dataclass(frozen=True)
class ModelSpec:
    """A network as the inference layer sees it.

    build_module: returns the ``nn.Module`` with its weights loaded, in eval mode; ``forward`` takes
        the inputs positionally in ``inputs`` order and returns one tensor, a tuple in ``outputs``
        order, or a dict keyed by output name.
    onnx_path: a shipped ONNX file; used instead of exporting ``build_module()`` when given.
    spatial_multiple: network height/width must be multiples of this (see preprocess.resize_and_pad).
    *_tolerance: largest relative error (see :func:`relative_error`) an engine of that precision may
        show against the fp32 reference at build time.
    input_generator: golden-input maker ``(shapes, rng) -> dict``; default: uniform [-1, 1) floats.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    build_module: Callable[[], torch.nn.Module] | None = None
    onnx_path: Path | None = None
    spatial_multiple: int = 1
    fp32_tolerance: float = 1e-3
    fp16_tolerance: float = 2e-2
    int8_tolerance: float = 1e-1
    input_generator: InputGenerator | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"model name must be letters, digits, '_' or '-', got {self.name!r}")
        if not self.inputs or not self.outputs:
            raise ValueError(f"model {self.name!r} needs at least one input and one output")
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise ValueError(f"model {self.name!r}: tensor names must be unique, got {names}")
        if self.build_module is None and self.onnx_path is None:
            raise ValueError(f"model {self.name!r} needs build_module or onnx_path")
        if self.spatial_multiple < 1:
            raise ValueError(f"model {self.name!r}: spatial_multiple must be >= 1")

    def tolerance(self, precision: str) -> float:
        """The build-time relative-error tolerance for an engine of ``precision``."""
        return {"fp32": self.fp32_tolerance, "fp16": self.fp16_tolerance, "int8": self.int8_tolerance}[precision]

    def input_shapes(self, height: int, width: int) -> dict[str, tuple[int, ...]]:
        """Concrete input shapes at a ``height`` x ``width`` network input."""
        return {t.name: t.resolved(height, width).concrete_shape for t in self.inputs}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``{tensor name: {axis: symbol}}`` for every symbolic dimension (ONNX export format)."""
        axes: dict[str, dict[int, str]] = {}
        for t in (*self.inputs, *self.outputs):
            symbolic = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            if symbolic:
                axes[t.name] = symbolic
        return axes

    def make_inputs(self, height: int, width: int, seed: int = 0) -> dict[str, NDArray[Any]]:
        """Golden inputs at ``height`` x ``width``: reproducible for a seed, C-contiguous numpy arrays."""
        shapes = self.input_shapes(height, width)
        rng = np.random.default_rng(seed)
        if self.input_generator is not None:
            return {k: np.ascontiguousarray(v) for k, v in self.input_generator(shapes, rng).items()}
        arrays: dict[str, NDArray[Any]] = {}
        for t in self.inputs:
            dtype = np.dtype(t.dtype)
            if dtype.kind == "f":
                arrays[t.name] = rng.uniform(-1.0, 1.0, shapes[t.name]).astype(dtype)
            elif dtype.kind == "b":
                arrays[t.name] = rng.random(shapes[t.name]) < 0.5
            else:
                arrays[t.name] = rng.integers(0, 256, shapes[t.name]).astype(dtype)
        return arrays


@runtime_checkable
class Engine(Protocol):
    """A model ready to run on one backend and device."""

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        """Inputs, in the model's order (symbolic dims: any size, consistent across tensors)."""
        ...

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        """Outputs, in the model's order."""
        ...

    @property
    def backend(self) -> str:
        """``tensorrt`` | ``torch`` | ``onnxruntime``."""
        ...

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda:N``."""
        ...

    @property
    def precision(self) -> str:
        """The precision actually running: ``fp32`` | ``fp16`` | ``int8``."""
        ...

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run once. numpy in -> numpy out; torch tensors in -> torch tensors out on ``device``."""
        ...

    def warmup(self, iterations: int = 3) -> None:
        """Run a few times at the nominal size so lazy initialisation happens before the first frame."""
        ...


class EngineBase(ABC):
    """What the backends' engines share: the :class:`Engine` properties, ``warmup`` and the I/O name check.

    A subclass calls ``super().__init__`` and implements ``infer``. An engine built for one fixed
    size (TensorRT) replaces ``_input_specs`` / ``_output_specs`` with the resolved specs.
    """

    backend: str

    def __init__(self, spec: ModelSpec, height: int, width: int, device: str | torch.device, precision: str) -> None:
        self._spec = spec
        self._nominal = (int(height), int(width))
        self._input_specs = spec.inputs
        self._output_specs = spec.outputs
        self._device_name = str(device)
        self._precision = precision

    @property
    def input_specs(self) -> tuple[TensorSpec, ...]:
        """Inputs, in the model's order: symbolic dims (any size) unless the engine has one fixed size."""
        return self._input_specs

    @property
    def output_specs(self) -> tuple[TensorSpec, ...]:
        """Outputs, in the model's order."""
        return self._output_specs

    @property
    def device(self) -> str:
        """``cpu`` or ``cuda:N``."""
        return self._device_name

    @property
    def precision(self) -> str:
        """The precision actually running: ``fp32`` | ``fp16`` | ``int8``."""
        return self._precision

    @abstractmethod
    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run once. numpy in -> numpy out; torch tensors in -> torch tensors out on ``device``."""

    def warmup(self, iterations: int = 3) -> None:
        """Run ``iterations`` times on golden inputs at the nominal size."""
        golden = self._spec.make_inputs(*self._nominal)
        for _ in range(iterations):
            self.infer(golden)

    def _check_io_names(self, inputs: Sequence[str], outputs: Sequence[str], what: str) -> None:
        """Raise InferenceError unless the loaded model takes the spec's inputs and gives its outputs.

        ``inputs``: the model's input names (must equal the spec's, in order); ``outputs``: its output
        names (must include the spec's); ``what`` names the model in the message.
        """
        spec = self._spec
        if list(inputs) != [t.name for t in spec.inputs] or not {t.name for t in spec.outputs} <= set(outputs):
            raise InferenceError(f"{what} of {spec.name!r} has inputs {list(inputs)} and outputs {list(outputs)}; "
                                 f"the spec expects {[t.name for t in spec.inputs]} -> "
                                 f"{[t.name for t in spec.outputs]}")


def is_torch_tensor(value: object) -> bool:
    """Whether ``value`` is a torch.Tensor (without importing torch when nobody has)."""
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(value, torch_module.Tensor)


def check_inputs(inputs: Mapping[str, Any], specs: Sequence[TensorSpec]) -> dict[str, int]:
    """Validate ``inputs`` against ``specs``; returns the size bound to each symbol (e.g. ``height``).

    Raises InputError naming the missing/unexpected tensor, the wrong type, rank, dimension or dtype,
    or a symbol that takes two different sizes.
    """
    expected = [s.name for s in specs]
    missing = [n for n in expected if n not in inputs]
    unexpected = [n for n in inputs if n not in expected]
    if missing or unexpected:
        raise InputError(f"inputs must be exactly {expected}; missing {missing}, unexpected {unexpected}")
    bound: dict[str, int] = {}
    for spec in specs:
        value = inputs[spec.name]
        if not (isinstance(value, np.ndarray) or is_torch_tensor(value)):
            raise InputError(f"input {spec.name!r} must be a numpy array or torch tensor, got {type(value)}")
        shape = tuple(int(d) for d in value.shape)
        dtype_name = str(value.dtype).removeprefix("torch.")
        if dtype_name != spec.dtype:
            raise InputError(f"input {spec.name!r} has dtype {dtype_name}, expected {spec.dtype}")
        if len(shape) != len(spec.shape):
            raise InputError(f"input {spec.name!r} has shape {shape}, expected rank {len(spec.shape)} {spec.shape}")
        for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
            if isinstance(want, int):
                if got != want:
                    raise InputError(f"input {spec.name!r} has shape {shape}, expected {spec.shape} (axis {axis})")
            elif bound.setdefault(want, got) != got:
                raise InputError(f"input {spec.name!r}: dimension {want!r} is {got} here but {bound[want]} "
                                 "in an earlier input")
    return bound


def relative_error(actual: NDArray[Any], expected: NDArray[Any]) -> float:
    """Normwise relative error ``max|actual - expected| / max|expected|`` (inf on shape mismatch or NaN).

    Robust to outputs with near-zero elements, unlike an element-wise ratio.
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return float("inf")
    diff = float(np.max(np.abs(a - e), initial=0.0))
    scale = float(np.max(np.abs(e), initial=0.0))
    if not np.isfinite(diff):
        return float("inf")
    return diff / max(scale, 1e-12)


def to_numpy(value: Any) -> NDArray[Any]:
    """A host numpy view/copy of a numpy array or torch tensor (any device)."""
    if is_torch_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def output_errors(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, float]:
    """Relative error per output name of ``expected`` (inf where ``actual`` lacks it)."""
    return {name: relative_error(to_numpy(actual[name]), to_numpy(ref)) if name in actual else float("inf")
            for name, ref in expected.items()}


def registered_model_specs() -> tuple[tuple[ModelSpec, ...], str | None]:
    """The shipped models: ``geovis_ros.inference.registry.MODEL_SPECS``, plus a note when there are none.

    Returns ``(specs, note)``; ``note`` says why the list is empty (registry module missing or empty),
    None otherwise. A registry that exists but fails to import raises (that is a bug, not a config).
    """
    try:
        registry = importlib.import_module(REGISTRY_MODULE)
    except ModuleNotFoundError as err:
        if err.name != REGISTRY_MODULE:
            raise
        return (), f"{REGISTRY_MODULE} does not exist yet: no shipped models are registered"
    specs = tuple(getattr(registry, "MODEL_SPECS", ()))
    bad = [s for s in specs if not isinstance(s, ModelSpec)]
    if bad:
        raise TypeError(f"{REGISTRY_MODULE}.MODEL_SPECS must hold ModelSpec objects, got {bad!r}")
    return specs, (None if specs else f"{REGISTRY_MODULE}.MODEL_SPECS is empty")
