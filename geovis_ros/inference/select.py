"""Backend selection: what can run here, in which order, and the factory that creates an Engine.

``backend="auto"`` tries tensorrt (CUDA) > torch (CUDA) > onnxruntime (CUDA: its TensorRT and CUDA
execution providers, where installed) > onnxruntime (CPU) > torch (CPU), skipping what is not
importable or usable, and logs the choice together with the reason for every skipped option. An
explicit backend is tried first; with ``allow_fallback`` the auto order follows it. A backend that
fails to build or load (any exception: TensorRT raises AttributeError/TypeError/RuntimeError too)
falls back once to the next option; the caller can keep the failures (``failed``) so that the
failed option is never tried again for that model.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from geovis_ros.inference.devices import cuda_unavailable_reason, physical_cpu_cores
from geovis_ros.inference.engine import (
    BackendUnavailableError,
    Engine,
    EngineConfig,
    InferenceError,
    ModelSpec,
)

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendOption:
    """One way to run a model: a backend on a device kind (``cpu`` or ``cuda``)."""

    backend: str
    device: str

    @property
    def label(self) -> str:
        """E.g. ``onnxruntime-cpu``."""
        return f"{self.backend}-{self.device}"


AUTO_ORDER = (BackendOption("tensorrt", "cuda"), BackendOption("torch", "cuda"), BackendOption("onnxruntime", "cuda"),
              BackendOption("onnxruntime", "cpu"), BackendOption("torch", "cpu"))



def _import_reason(module_name: str) -> str | None:
    try:
        importlib.import_module(module_name)
    except ImportError as err:
        return f"{module_name} is not installed ({err})"
    return None


def option_unavailable_reason(option: BackendOption, spec: ModelSpec | None = None) -> str | None:
    """Why ``option`` cannot run (``spec``, if given, here), or None if it can."""
    if option.backend == "tensorrt":
        reason = _import_reason("tensorrt")
        return reason or cuda_unavailable_reason() or _import_reason("onnx")
    if option.backend == "torch":
        if spec is not None and spec.build_module is None:
            return f"model {spec.name} ships only an ONNX file, no torch module"
        return cuda_unavailable_reason() if option.device == "cuda" else _import_reason("torch")
    reason = _import_reason("onnxruntime")
    if reason is None and option.device == "cuda":
        from geovis_ros.inference.onnxruntime_backend import gpu_providers

        if not gpu_providers():
            reason = "onnxruntime has no TensorRT or CUDA execution provider (install onnxruntime-gpu)"
    return reason



Availability = Callable[[BackendOption, ModelSpec | None], str | None]


def backend_order(config: EngineConfig, spec: ModelSpec | None = None,
                  availability: Availability = option_unavailable_reason,
                  ) -> list[tuple[BackendOption, str | None]]:
    """The options to try for ``config``, in order, each with the reason it cannot run (None: usable).

    auto: :data:`AUTO_ORDER`. An explicit backend comes first (device ``auto``: CUDA if usable, else
    CPU), followed by the auto order when ``allow_fallback`` is set.
    """
    device_kind = config.device.partition(":")[0]
    if config.backend == "auto":
        wanted = list(AUTO_ORDER)
    else:
        if device_kind == "auto":
            own_cuda = BackendOption(config.backend, "cuda")
            kind = "cuda" if config.backend == "tensorrt" or availability(own_cuda, spec) is None else "cpu"
        else:
            kind = device_kind
        requested = BackendOption(config.backend, kind)
        wanted = [requested] + ([o for o in AUTO_ORDER if o != requested] if config.allow_fallback else [])
    return [(option, f"device is set to {config.device}" if device_kind not in ("auto", option.device)
             else availability(option, spec)) for option in wanted]


def _device_name(option: BackendOption, config: EngineConfig) -> str:
    return config.device if option.device == "cuda" and config.device.startswith("cuda:") else option.device


def _set_torch_cpu_threads(config: EngineConfig) -> None:
    import torch

    threads = config.num_threads or physical_cpu_cores()
    if torch.get_num_threads() != threads:
        LOG.info("torch intra-op threads: %d -> %d", torch.get_num_threads(), threads)
        torch.set_num_threads(threads)


ToolkitFactory = Callable[[str], object]


def _create(option: BackendOption, spec: ModelSpec, height: int, width: int, config: EngineConfig,
            toolkit_factory: ToolkitFactory | None) -> Engine:
    device = _device_name(option, config)
    if option.backend == "torch":
        from geovis_ros.inference.torch_backend import TorchEngine

        assert spec.build_module is not None  # availability checked it
        if option.device == "cpu":
            _set_torch_cpu_threads(config)
        return TorchEngine(spec, spec.build_module(), height, width, device=device, precision=config.precision,
                           compile_module=config.torch_compile)
    from geovis_ros.inference.export import onnx_bytes_for

    onnx_bytes = onnx_bytes_for(spec, height, width)
    if option.backend == "onnxruntime":
        from geovis_ros.inference.onnxruntime_backend import OnnxRuntimeEngine

        return OnnxRuntimeEngine(spec, onnx_bytes, height, width, device=device, num_threads=config.num_threads)
    from geovis_ros.inference.tensorrt_backend import TensorRTRuntime, load_or_build_engine

    toolkit = (toolkit_factory or TensorRTRuntime)(device)
    return load_or_build_engine(spec, onnx_bytes, height, width, config, toolkit,  # type: ignore[arg-type]
                                functools.partial(reference_engine, spec, onnx_bytes, height, width))


def reference_engine(spec: ModelSpec, onnx_bytes: bytes, height: int, width: int) -> Engine:
    """The fp32 CPU engine a new TensorRT engine is checked against: ONNX Runtime, else torch."""
    if option_unavailable_reason(BackendOption("onnxruntime", "cpu")) is None:
        from geovis_ros.inference.onnxruntime_backend import OnnxRuntimeEngine

        return OnnxRuntimeEngine(spec, onnx_bytes, height, width)
    if spec.build_module is None:
        raise BackendUnavailableError(f"no reference backend to check the TensorRT engine of {spec.name} "
                                      "(install onnxruntime)")
    from geovis_ros.inference.torch_backend import TorchEngine

    return TorchEngine(spec, spec.build_module(), height, width)


def create_engine(spec: ModelSpec, height: int, width: int, config: EngineConfig, *,
                  availability: Availability = option_unavailable_reason,
                  toolkit_factory: ToolkitFactory | None = None,
                  failed: MutableMapping[str, str] | None = None) -> Engine:
    """An Engine for ``spec`` at a ``height`` x ``width`` network input, chosen as ``config`` says.

    ``failed``: option label (e.g. ``tensorrt-cuda``) -> why it failed before; those options are
    skipped, and every new failure is added (so a caller creating engines for several sizes never
    retries a failed build). ``availability`` and ``toolkit_factory`` (device -> TensorRT toolkit)
    are injection points for tests. Raises BackendUnavailableError listing every option's reason
    when nothing can run, or the first failure (as InferenceError) when ``allow_fallback`` is off.
    """
    failed = {} if failed is None else failed
    if height % spec.spatial_multiple or width % spec.spatial_multiple:
        raise ValueError(f"{spec.name} needs a network size that is a multiple of {spec.spatial_multiple}, "
                         f"got {width}x{height} (see preprocess.resize_and_pad)")
    reasons: list[str] = []
    for option, unavailable in backend_order(config, spec, availability):
        unavailable = unavailable or failed.get(option.label)
        if unavailable is not None:
            reasons.append(f"{option.label}: {unavailable}")
            continue
        try:
            engine = _create(option, spec, height, width, config, toolkit_factory)
        except Exception as err:  # noqa: BLE001 - any build/load failure falls back (TensorRT raises many types)
            reason = str(err) if isinstance(err, InferenceError) else f"{type(err).__name__}: {err}"
            failed[option.label] = reason
            if not config.allow_fallback:
                if isinstance(err, InferenceError):
                    raise
                raise InferenceError(f"{spec.name}: {option.label} failed: {reason}") from err
            LOG.warning("%s: %s failed, trying the next backend (never retried for this model): %s", spec.name,
                        option.label, reason)
            reasons.append(f"{option.label}: {reason}")
            continue
        LOG.info("%s %dx%d: using %s (%s, %s)%s", spec.name, width, height, option.label, engine.device,
                 engine.precision, "; skipped " + "; ".join(reasons) if reasons else "")
        return engine
    raise BackendUnavailableError(f"no backend can run {spec.name} with backend={config.backend}, "
                                  f"device={config.device}: " + "; ".join(reasons))
