"""TensorRT 10 and 11 backend: build, cache, validate, and run engines on the shared CUDA stream.

Build: ONNX parser, static optimisation profile. The API is feature-detected, not version-parsed:
TensorRT 10 (``trt.BuilderFlag.FP16`` exists) builds weakly typed networks with precision flags
(FP32/FP16; INT8 from a calibration cache through ``IInt8EntropyCalibrator2``). TensorRT 11 has
removed those flags and the calibrator classes and builds strongly typed networks only: the
precision is the ONNX graph's own, so fp16 converts the ONNX to mixed precision first
(ONNX Runtime's float16 converter, inputs/outputs kept fp32; the cache key hashes the converted model) and
int8 needs an ONNX with explicit Q/DQ nodes (quantised with NVIDIA ModelOpt), else it is refused.
Run: ``execute_async_v3`` on the device's shared torch CUDA stream (:mod:`geovis_ros.inference.gpu`) with
pre-allocated device buffers and pinned host staging.

``tensorrt`` is imported only by :class:`TensorRTRuntime`. Everything around it (cache keys, locking,
the build-time numerical check, fallback) goes through the small :class:`TensorRTToolkit` protocol,
so it runs and is tested without TensorRT by injecting a fake toolkit.

Engines are built for one input size (min = opt = max in the optimisation profile): the fastest
kernels for the camera's fixed resolution; another size is another cache key.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from geovis_ros.inference.cache import BuildOutput, EngineCache, EngineCacheKey
from geovis_ros.inference.engine import (
    BackendUnavailableError,
    Engine,
    EngineBase,
    EngineConfig,
    EngineValidationError,
    InferenceError,
    ModelSpec,
    TensorSpec,
    check_inputs,
    is_torch_tensor,
    output_errors,
    require,
)
from geovis_ros.inference.gpu import DeviceStream

LOG = logging.getLogger(__name__)

GOLDEN_SEED = 0
ReferenceFactory = Callable[[], Engine]
"""Creates the fp32 engine a new TensorRT engine is checked against (only called when building)."""


@dataclass(frozen=True)
class BuildRequest:
    """Everything a TensorRT build consumes. ``input_shapes``: name -> shape, in input order."""

    onnx_bytes: bytes
    input_shapes: Mapping[str, tuple[int, ...]]
    precision: str
    workspace_mib: int
    int8_calibration_cache: Path | None = None


class TensorRTToolkit(Protocol):
    """The TensorRT operations the cache logic needs (real: :class:`TensorRTRuntime`).

    ``strongly_typed``: the toolkit builds strongly typed networks only (TensorRT 11): precision
    comes from the ONNX graph, which :func:`load_or_build_engine` converts beforehand.
    """

    version: str
    gpu_name: str
    compute_capability: str
    strongly_typed: bool

    def build(self, request: BuildRequest, timing_cache: bytes | None) -> BuildOutput:
        """Build a serialized engine; returns it with the updated timing cache."""
        ...

    def load(self, engine_bytes: bytes, spec: ModelSpec, height: int, width: int, precision: str) -> Engine:
        """Deserialize an engine into a runnable Engine; raises InferenceError if it cannot."""
        ...


def builder_flags(config: EngineConfig, strongly_typed: bool = False) -> tuple[str, ...]:
    """Builder settings that change the engine, as key components (precision is keyed separately).

    Strongly typed builds (TensorRT 11) take their precision from the (converted) ONNX, whose hash
    is keyed; weakly typed INT8 keys its calibration cache.
    """
    flags = [f"workspace_mib={config.workspace_mib}", "profile=static"]
    if strongly_typed:
        flags.append("typing=strong")
    if config.precision == "fp32":
        flags.append("tf32=off")  # fp32 means fp32: TensorRT would otherwise use TF32 (10-bit mantissa) on Ampere+
    if config.precision == "int8" and not strongly_typed:
        flags.append(f"int8_calibration_sha256={_calibration_digest(config.int8_calibration_cache)}")
    return tuple(flags)


QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@functools.lru_cache(maxsize=4)
def fp16_onnx(onnx_bytes: bytes) -> bytes:
    """The ONNX model in fp16 inside, inputs and outputs kept float32, for a strongly typed build.

    ONNX Runtime's float16 converter (``onnxruntime.transformers.float16``, installed with
    onnxruntime): onnxconverter-common 1.16's converter, which it derives from, leaves exported
    ``Cast(to=float)`` nodes and some graph-input casts mistyped (measured on the shipped flow
    network and on a transformers Depth Anything export). Shape-inference annotations are dropped
    first (stale fp32 ``value_info`` mistypes the inserted casts), the nodes are re-sorted
    topologically (the converter appends the input casts, TensorRT's parser reads in order) and
    the result is checked with ``onnx.checker`` (full check). Deterministic: same bytes in, same out.
    Raises InferenceError when the conversion gives an invalid model.
    """
    onnx = require("onnx", "fp16 for a strongly typed TensorRT build")
    float16 = require("onnxruntime.transformers.float16", "fp16 for a strongly typed TensorRT build (TensorRT 11)")
    model = onnx.load_from_string(onnx_bytes)
    del model.graph.value_info[:]
    converted = float16.convert_float_to_float16(model, keep_io_types=True)
    _sort_topologically(converted.graph)
    try:
        onnx.checker.check_model(converted, full_check=True)
    except Exception as err:  # ValidationError, InferenceError
        raise InferenceError(f"the fp16 conversion of the ONNX model is invalid ({err}); use precision fp32 with "
                             "TensorRT 11, or convert the model with NVIDIA ModelOpt AutoCast") from err
    return bytes(converted.SerializeToString())


def _sort_topologically(graph: Any) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (Kahn's algorithm)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    producers = {out: index for index, node in enumerate(graph.node) for out in node.output}
    waiting = [sum(1 for i in set(node.input) if i not in available and i in producers) for node in graph.node]
    consumers: dict[int, list[int]] = {}
    for index, node in enumerate(graph.node):
        for i in set(node.input):
            if i not in available and i in producers:
                consumers.setdefault(producers[i], []).append(index)
    ready = [index for index, count in enumerate(waiting) if count == 0]
    order: list[int] = []
    while ready:
        index = ready.pop(0)
        order.append(index)
        for consumer in consumers.get(index, []):
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                ready.append(consumer)
    if len(order) != len(graph.node):
        raise InferenceError("the ONNX graph has a cycle or an input no node produces")
    nodes = [graph.node[index] for index in order]
    del graph.node[:]
    graph.node.extend(nodes)


def has_qdq(onnx_bytes: bytes) -> bool:
    """Whether the ONNX graph (subgraphs not searched) has explicit QuantizeLinear/DequantizeLinear nodes."""
    onnx = require("onnx", "checking an ONNX model for Q/DQ nodes")
    return any(node.op_type in QDQ_OPS for node in onnx.load_from_string(onnx_bytes).graph.node)


def typed_onnx(onnx_bytes: bytes, precision: str, toolkit: TensorRTToolkit) -> bytes:
    """The ONNX ``toolkit`` builds for ``precision``.

    As is for weakly typed toolkits and fp32; fp16-converted (:func:`fp16_onnx`) on a strongly typed
    one; int8 there needs a model with Q/DQ nodes, else InferenceError naming NVIDIA ModelOpt.
    """
    if not toolkit.strongly_typed or precision == "fp32":
        return onnx_bytes
    if precision == "fp16":
        return fp16_onnx(onnx_bytes)
    if not has_qdq(onnx_bytes):
        raise InferenceError(
            f"TensorRT {toolkit.version} builds strongly typed networks only: INT8 needs an ONNX model with explicit "
            "Q/DQ (QuantizeLinear/DequantizeLinear) nodes. Quantise it with NVIDIA ModelOpt (pip install "
            "nvidia-modelopt; python -m modelopt.onnx.quantization --quantize_mode int8 --onnx_path MODEL.onnx "
            "--calibration_data FRAMES.npy) and point the model parameter at the result, or use fp16")
    return onnx_bytes


def _calibration_digest(path: Path | None) -> str:
    if path is None or not Path(path).is_file():
        raise InferenceError("INT8 needs a calibration cache: set int8_calibration_cache to the file written by "
                             f"a TensorRT calibration run on real images (got {path})")
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def engine_cache_key(spec: ModelSpec, onnx_bytes: bytes, height: int, width: int, config: EngineConfig,
                     toolkit: TensorRTToolkit) -> EngineCacheKey:
    """The cache key of ``spec`` at ``height`` x ``width`` built by ``toolkit`` with ``config``.

    The model hash is of the ONNX the toolkit builds (:func:`typed_onnx`: fp16-converted on a
    strongly typed toolkit).
    """
    return EngineCacheKey(
        model=spec.name,
        onnx_sha256=hashlib.sha256(typed_onnx(onnx_bytes, config.precision, toolkit)).hexdigest(),
        tensorrt_version=toolkit.version,
        gpu_name=toolkit.gpu_name,
        compute_capability=toolkit.compute_capability,
        precision=config.precision,
        input_shapes=tuple(spec.input_shapes(height, width).items()),
        builder_flags=builder_flags(config, toolkit.strongly_typed),
    )


def load_or_build_engine(spec: ModelSpec, onnx_bytes: bytes, height: int, width: int, config: EngineConfig,
                         toolkit: TensorRTToolkit, reference: ReferenceFactory) -> Engine:
    """A TensorRT engine for ``spec``: cached if the key matches, else built, checked and cached.

    The build-time check runs golden inputs (``spec.make_inputs(seed=0)``) through the new engine
    and through the fp32 engine ``reference()`` creates (only called when building); the per-output
    relative errors are stored with the engine. An engine whose error exceeds
    ``spec.tolerance(precision)`` raises EngineValidationError, now and on every later start (from
    the stored report, without rebuilding; delete the file or use ``build-engines --force`` to
    retry). A cached engine TensorRT cannot deserialize is removed and rebuilt once. A strongly
    typed toolkit builds :func:`typed_onnx` (fp16: the converted model, keyed by its hash).
    """
    key = engine_cache_key(spec, onnx_bytes, height, width, config, toolkit)
    cache = EngineCache(config.engine_cache_dir, config.lock_timeout_s)
    request = BuildRequest(typed_onnx(onnx_bytes, config.precision, toolkit), spec.input_shapes(height, width),
                           config.precision, config.workspace_mib, config.int8_calibration_cache)
    golden = spec.make_inputs(height, width, seed=GOLDEN_SEED)
    fresh: dict[str, Engine] = {}

    def build(timing_cache: bytes | None) -> BuildOutput:
        return toolkit.build(request, timing_cache)

    def validate(engine_bytes: bytes) -> dict[str, Any]:
        checker = reference()
        expected = checker.infer(golden)
        report: dict[str, Any] = {"reference": f"{checker.backend}-{checker.device}", "golden_seed": GOLDEN_SEED}
        try:
            fresh["engine"] = toolkit.load(engine_bytes, spec, height, width, config.precision)
            report["errors"] = output_errors(fresh["engine"].infer(golden), expected)
        except InferenceError as err:  # an engine that cannot even run is rejected (and remembered) too
            report["errors"] = {t.name: float("inf") for t in spec.outputs}
            report["failure"] = str(err)
        return {"validation": report}

    for attempt in (1, 2):
        entry = cache.get_or_build(key, build, validate)
        _raise_if_rejected(spec, key, entry.metadata, entry.path, cached=entry.hit)
        if "engine" in fresh:
            return fresh["engine"]
        try:
            return toolkit.load(entry.engine, spec, height, width, config.precision)
        except InferenceError as err:
            if attempt == 2:
                raise
            cache.invalidate(key, f"TensorRT could not load it: {err}")
    raise AssertionError("unreachable")


def _raise_if_rejected(spec: ModelSpec, key: EngineCacheKey, metadata: Mapping[str, Any], path: Path,
                       cached: bool) -> None:
    """EngineValidationError if the stored validation report exceeds the model's tolerance."""
    report = metadata.get("validation")
    tolerance = spec.tolerance(key.precision)
    if not isinstance(report, Mapping) or not isinstance(report.get("errors"), Mapping):
        raise EngineValidationError(f"engine {path} has no build-time validation report; delete it to rebuild")
    failed = {name: err for name, err in report["errors"].items() if not float(err) <= tolerance}
    if failed:
        detail = (f"it failed to run ({report['failure']})" if report.get("failure") else
                  ", ".join(f"{name!r} relative error {err:.3g}" for name, err in failed.items()))
        when = f"(recorded when it was built; {path})" if cached else f"({path})"
        raise EngineValidationError(
            f"TensorRT {key.tensorrt_version} {key.precision} engine of {spec.name} on {key.gpu_name} disagrees "
            f"with the {report.get('reference')} reference beyond the tolerance {tolerance:g}: {detail} {when}")


def is_strongly_typed_only(trt: Any) -> bool:
    """Whether this TensorRT builds strongly typed networks only (11.x: ``BuilderFlag.FP16`` is gone)."""
    return not hasattr(trt.BuilderFlag, "FP16")


def build_serialized_engine(trt: Any, logger: Any, request: BuildRequest, timing_cache: bytes | None) -> BuildOutput:
    """Parse ``request.onnx_bytes`` and build a serialized engine with the ``trt`` module's API (no CUDA calls here).

    TensorRT 10 (weakly typed): precision flags FP16 (and INT8 with a cache-only calibrator); TF32
    cleared for fp32. TensorRT 11 (:func:`is_strongly_typed_only`): a ``STRONGLY_TYPED`` network,
    no precision flags; the ONNX already carries the precision (:func:`typed_onnx`).
    """
    strongly_typed = is_strongly_typed_only(trt)
    builder = trt.Builder(logger)
    # explicit batch is the only mode since TensorRT 10; 11 builds strongly typed networks only
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(request.onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InferenceError(f"TensorRT could not parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, request.workspace_mib << 20)
    if request.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    calibrator = None  # kept referenced here until the build is done
    if not strongly_typed and request.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without int8 kernels fall back to fp16
        if request.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            calibrator = _cache_only_calibrator(trt, request.int8_calibration_cache)
            config.int8_calibrator = calibrator
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        name = network.get_input(index).name
        shape = request.input_shapes[name]
        profile.set_shape(name, shape, shape, shape)
    config.add_optimization_profile(profile)
    config.set_timing_cache(_timing_cache(config, timing_cache), False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InferenceError("TensorRT failed to build the engine (see the TensorRT errors logged above)")
    return BuildOutput(bytes(serialized), bytes(config.get_timing_cache().serialize()))


def _timing_cache(config: Any, serialized: bytes | None) -> Any:
    try:
        return config.create_timing_cache(serialized or b"")
    except Exception as err:  # TensorRT raises a plain RuntimeError/TypeError on a bad blob
        LOG.warning("TensorRT rejected the stored timing cache (%s); starting from an empty one", err)
        return config.create_timing_cache(b"")


class TensorRTRuntime:
    """The real :class:`TensorRTToolkit` (TensorRT 10 or 11 Python API) on one CUDA device."""

    def __init__(self, device: str = "cuda") -> None:
        from geovis_ros.inference.devices import cuda_unavailable_reason

        self._trt = require("tensorrt", "the TensorRT backend")
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"TensorRT needs a CUDA device: {reason}")
        import torch

        self._device = torch.device(device if ":" in device else f"cuda:{torch.cuda.current_device()}")
        props = torch.cuda.get_device_properties(self._device)
        self.version = str(self._trt.__version__)
        self.strongly_typed = is_strongly_typed_only(self._trt)
        self.gpu_name = str(props.name)
        self.compute_capability = f"{props.major}.{props.minor}"
        self._logger = _python_logger(self._trt)
        self._runtime = self._trt.Runtime(self._logger)

    def build(self, request: BuildRequest, timing_cache: bytes | None) -> BuildOutput:
        """:func:`build_serialized_engine` on this toolkit's CUDA device."""
        import torch

        with torch.cuda.device(self._device):
            return build_serialized_engine(self._trt, self._logger, request, timing_cache)

    def load(self, engine_bytes: bytes, spec: ModelSpec, height: int, width: int, precision: str) -> Engine:
        """Deserialize ``engine_bytes`` into a :class:`TensorRTEngine`."""
        import torch

        with torch.cuda.device(self._device):
            engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise InferenceError("TensorRT could not deserialize the engine (built by another TensorRT version "
                                 "or for another GPU?)")
        return TensorRTEngine(self._trt, engine, spec, height, width, precision, self._device)


def _python_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that forwards TensorRT messages to Python logging."""
    kinds = trt.ILogger.Severity
    levels = {kinds.INTERNAL_ERROR: logging.ERROR, kinds.ERROR: logging.ERROR, kinds.WARNING: logging.WARNING,
              kinds.INFO: logging.DEBUG, kinds.VERBOSE: logging.DEBUG}

    class PythonLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            LOG.log(levels.get(severity, logging.DEBUG), "TensorRT: %s", msg)

    return PythonLogger()


def _cache_only_calibrator(trt: Any, cache_path: Path | None) -> Any:
    """An INT8 entropy calibrator that only replays an existing calibration cache (no data batches)."""
    calibration = Path(cache_path).read_bytes() if cache_path is not None else None

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None  # all scales come from the cache

        def read_calibration_cache(self) -> bytes | None:
            return calibration

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return CacheCalibrator()


class TensorRTEngine(EngineBase):
    """A deserialized engine with one execution context and device buffers allocated once.

    ``infer`` enqueues on the device's shared CUDA stream (``stream``: default a
    :class:`~geovis_ros.inference.gpu.DeviceStream` of ``device``), ``execute_async_v3`` included.
    Torch CUDA inputs that are contiguous, on this device and of the right dtype are bound directly
    (no copy); numpy inputs go through pinned host buffers into the pre-allocated input buffers.
    numpy outputs come from the pre-allocated buffers through pinned host buffers with one wait;
    torch outputs are device-to-device copies (same stream) so the caller owns them. Not
    thread-safe: one engine per thread.
    """

    backend = "tensorrt"

    def __init__(self, trt: Any, engine: Any, spec: ModelSpec, height: int, width: int, precision: str,
                 device: Any, stream: DeviceStream | None = None) -> None:
        import torch

        from geovis_ros.inference.torch_backend import torch_dtype

        super().__init__(spec, height, width, device, precision)
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise InferenceError("TensorRT could not create an execution context (out of GPU memory?)")
        self._device = device
        self._stream = DeviceStream(device) if stream is None else stream
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        self._check_io_names(inputs, outputs, "TensorRT engine")
        self._input_specs = tuple(t.resolved(height, width) for t in spec.inputs)
        for t in self._input_specs:
            self._context.set_input_shape(t.name, t.concrete_shape)
        self._buffers: dict[str, torch.Tensor] = {}
        output_specs = []
        for name in names:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            self._buffers[name] = torch.empty(shape, dtype=torch_dtype(dtype), device=device)
            self._context.set_tensor_address(name, self._buffers[name].data_ptr())
            if name in outputs:
                output_specs.append(TensorSpec(name, shape, dtype))
        order = [t.name for t in spec.outputs]
        self._output_specs = tuple(sorted((t for t in output_specs if t.name in order),
                                          key=lambda t: order.index(t.name)))

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Enqueue on the shared CUDA stream; numpy in -> numpy out, torch in -> torch out."""
        check_inputs(inputs, self._input_specs)
        torch_mode = any(is_torch_tensor(v) for v in inputs.values())
        with self._stream.running():
            for spec in self._input_specs:
                value = inputs[spec.name]
                buffer = self._buffers[spec.name]
                if is_torch_tensor(value) and value.device == buffer.device and value.is_contiguous():
                    self._context.set_tensor_address(spec.name, value.data_ptr())
                else:
                    source = value if is_torch_tensor(value) else self._stream.pinned(spec.name, value)
                    buffer.copy_(source, non_blocking=True)
                    self._context.set_tensor_address(spec.name, buffer.data_ptr())
            if not self._context.execute_async_v3(self._stream.handle):
                raise InferenceError(f"TensorRT execute_async_v3 failed for {self._spec.name}")
            if torch_mode:
                return self._stream.hand_back({t.name: self._buffers[t.name].clone() for t in self._output_specs})
            return self._stream.download({t.name: self._buffers[t.name] for t in self._output_specs})
