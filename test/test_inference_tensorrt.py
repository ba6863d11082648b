"""TensorRT path: cache + build-time numerical check + fallback, driven by a fake toolkit here; the
real TensorRT build/run is tested where TensorRT and a CUDA GPU exist.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
from test_inference_nets import tiny_depth_spec, tiny_flow_spec

from geovis_ros.inference.cache import BuildOutput, EngineCache, write_record
from geovis_ros.inference.engine import (
    EngineConfig,
    EngineValidationError,
    InferenceError,
    ModelSpec,
    TensorSpec,
)
from geovis_ros.inference.export import export_onnx
from geovis_ros.inference.onnxruntime_backend import OnnxRuntimeEngine
from geovis_ros.inference.select import BackendOption, create_engine, option_unavailable_reason
from geovis_ros.inference.tensorrt_backend import BuildRequest, engine_cache_key, load_or_build_engine

FAKE_ENGINE_HEADER = b"FAKE-TENSORRT-ENGINE\n"
H, W = 24, 32


class WrongByEngine:
    """An 'engine' that computes the model with ONNX Runtime, then shifts every output by
    ``error`` times its largest magnitude (relative error exactly ``error``)."""

    backend = "tensorrt"
    device = "cuda:0"

    def __init__(self, inner: OnnxRuntimeEngine, error: float, precision: str) -> None:
        self._inner, self._error, self.precision = inner, error, precision
        self.input_specs, self.output_specs = inner.input_specs, inner.output_specs

    def infer(self, inputs):
        return {k: v + np.float32(self._error * np.abs(v).max()) for k, v in self._inner.infer(inputs).items()}

    def warmup(self, iterations: int = 3) -> None:
        self._inner.warmup(iterations)


class FakeToolkit:
    """TensorRTToolkit stand-in: the 'serialized engine' is a header + the ONNX bytes."""

    version = "10.3.0"
    gpu_name = "Fake GPU"
    compute_capability = "8.7"
    strongly_typed = False

    def __init__(self, error: float = 0.0) -> None:
        self.error = error
        self.requests: list[BuildRequest] = []
        self.loads = 0

    @property
    def builds(self) -> int:
        return len(self.requests)

    def build(self, request: BuildRequest, timing_cache: bytes | None) -> BuildOutput:
        self.requests.append(request)
        return BuildOutput(FAKE_ENGINE_HEADER + request.onnx_bytes, b"timing")

    def load(self, engine_bytes: bytes, spec: ModelSpec, height: int, width: int, precision: str) -> WrongByEngine:
        self.loads += 1
        if not engine_bytes.startswith(FAKE_ENGINE_HEADER):
            raise InferenceError("TensorRT could not deserialize the engine")
        inner = OnnxRuntimeEngine(spec, engine_bytes[len(FAKE_ENGINE_HEADER):], height, width)
        return WrongByEngine(inner, self.error, precision)


@pytest.fixture(scope="module")
def depth_onnx() -> bytes:
    spec = tiny_depth_spec()
    return export_onnx(spec, spec.build_module(), H, W)


def _reference(spec: ModelSpec, onnx_bytes: bytes):
    return OnnxRuntimeEngine(spec, onnx_bytes, H, W).infer


def _reference_factory(spec: ModelSpec, onnx_bytes: bytes):
    return lambda: OnnxRuntimeEngine(spec, onnx_bytes, H, W)


def _build(spec: ModelSpec, onnx_bytes: bytes, toolkit: FakeToolkit, tmp_path: Path, precision: str = "fp16"):
    config = EngineConfig(backend="tensorrt", precision=precision, engine_cache_dir=tmp_path)
    return load_or_build_engine(spec, onnx_bytes, H, W, config, toolkit, _reference_factory(spec, onnx_bytes))


def test_good_engine_is_built_validated_cached_and_then_reused(tmp_path: Path, depth_onnx: bytes) -> None:
    spec, toolkit = tiny_depth_spec(), FakeToolkit()
    engine = _build(spec, depth_onnx, toolkit, tmp_path)
    assert (toolkit.builds, toolkit.loads) == (1, 1)  # the validated engine itself is returned
    request = toolkit.requests[0]
    assert request.input_shapes == {"image": (1, 3, H, W)} and request.precision == "fp16"
    inputs = spec.make_inputs(H, W, seed=5)
    reference = _reference(spec, depth_onnx)(inputs)
    np.testing.assert_allclose(engine.infer(inputs)["depth"], reference["depth"], rtol=1e-6)

    def no_reference() -> OnnxRuntimeEngine:
        raise AssertionError("the reference engine is only needed when building")

    config = EngineConfig(backend="tensorrt", precision="fp16", engine_cache_dir=tmp_path)
    load_or_build_engine(spec, depth_onnx, H, W, config, toolkit, no_reference)
    assert (toolkit.builds, toolkit.loads) == (1, 2)  # second start: cache hit, no rebuild
    entry = EngineCache(tmp_path).load(engine_cache_key(spec, depth_onnx, H, W, EngineConfig(precision="fp16"),
                                                        toolkit))
    assert entry is not None and entry.metadata["validation"]["errors"]["depth"] < 1e-6


def test_wrong_engine_is_rejected_with_a_clear_error_and_not_rebuilt(tmp_path: Path, depth_onnx: bytes) -> None:
    spec, toolkit = tiny_depth_spec(), FakeToolkit(error=0.1)
    with pytest.raises(EngineValidationError) as first:
        _build(spec, depth_onnx, toolkit, tmp_path)
    message = str(first.value)
    assert "'depth' relative error 0.1" in message and "tolerance 0.02" in message
    assert "TensorRT 10.3.0 fp16" in message and "Fake GPU" in message and "onnxruntime-cpu" in message
    with pytest.raises(EngineValidationError, match="recorded when it was built"):
        _build(spec, depth_onnx, toolkit, tmp_path)
    assert toolkit.builds == 1  # the rejection is remembered: no rebuild on every start
    lenient = tiny_depth_spec(fp16_tolerance=0.5)  # a looser per-model tolerance accepts the stored engine
    _build(lenient, depth_onnx, toolkit, tmp_path)
    assert toolkit.builds == 1


def test_engine_that_fails_to_run_is_rejected_and_remembered(tmp_path: Path, depth_onnx: bytes) -> None:
    class BrokenToolkit(FakeToolkit):
        def load(self, engine_bytes, spec, height, width, precision):
            raise InferenceError("execute_async_v3 failed")

    spec, toolkit = tiny_depth_spec(), BrokenToolkit()
    for _ in range(2):
        with pytest.raises(EngineValidationError, match=r"failed to run \(execute_async_v3 failed\)"):
            _build(spec, depth_onnx, toolkit, tmp_path)
    assert toolkit.builds == 1


@pytest.mark.parametrize("precision, accepted", [("fp32", False), ("fp16", True)])
def test_tolerance_depends_on_precision(tmp_path: Path, depth_onnx: bytes, precision: str, accepted: bool) -> None:
    spec, toolkit = tiny_depth_spec(), FakeToolkit(error=5e-3)  # fp32 tolerance 1e-3, fp16 2e-2
    if accepted:
        assert _build(spec, depth_onnx, toolkit, tmp_path, precision).precision == precision
    else:
        with pytest.raises(EngineValidationError, match="relative error 0.005"):
            _build(spec, depth_onnx, toolkit, tmp_path, precision)


def test_every_output_of_a_multi_output_model_is_checked(tmp_path: Path) -> None:
    spec = tiny_flow_spec()
    onnx_bytes = export_onnx(spec, spec.build_module(), H, W)
    with pytest.raises(EngineValidationError, match="'flow' relative error .* 'confidence' relative error"):
        _build(spec, onnx_bytes, FakeToolkit(error=0.3), tmp_path)


def test_undeserializable_cached_engine_is_removed_and_rebuilt(tmp_path: Path, depth_onnx: bytes,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    spec, toolkit = tiny_depth_spec(), FakeToolkit()
    _build(spec, depth_onnx, toolkit, tmp_path)
    key = engine_cache_key(spec, depth_onnx, H, W, EngineConfig(precision="fp16"), toolkit)
    path = EngineCache(tmp_path).engine_path(key)
    passing = {"validation": {"reference": "onnxruntime-cpu", "errors": {"depth": 0.0}}}
    write_record(path, key.as_dict(), b"engine from an incompatible runtime", passing)
    with caplog.at_level(logging.WARNING):
        engine = _build(spec, depth_onnx, toolkit, tmp_path)
    assert toolkit.builds == 2 and "could not load it" in caplog.text
    assert engine.infer(spec.make_inputs(H, W))["depth"].shape == (1, 1, H, W)


def test_key_follows_toolkit_and_config(depth_onnx: bytes, tmp_path: Path) -> None:
    spec, toolkit = tiny_depth_spec(), FakeToolkit()
    base = engine_cache_key(spec, depth_onnx, H, W, EngineConfig(), toolkit)
    upgraded = FakeToolkit()
    upgraded.version = "10.4.0"
    assert engine_cache_key(spec, depth_onnx, H, W, EngineConfig(), upgraded).digest != base.digest
    assert engine_cache_key(spec, depth_onnx, H, 2 * W, EngineConfig(), toolkit).digest != base.digest
    assert engine_cache_key(spec, depth_onnx, H, W, EngineConfig(workspace_mib=64), toolkit).digest != base.digest
    assert engine_cache_key(spec, depth_onnx + b" ", H, W, EngineConfig(), toolkit).digest != base.digest


def test_int8_needs_a_calibration_cache_which_is_part_of_the_key(depth_onnx: bytes, tmp_path: Path) -> None:
    spec, toolkit = tiny_depth_spec(), FakeToolkit()
    with pytest.raises(InferenceError, match="INT8 needs a calibration cache"):
        engine_cache_key(spec, depth_onnx, H, W, EngineConfig(precision="int8"), toolkit)
    calibration = tmp_path / "calibration.cache"
    calibration.write_bytes(b"TRT-1003-EntropyCalibration2\nimage: 3c010a14\n")
    config = EngineConfig(precision="int8", int8_calibration_cache=calibration)
    first = engine_cache_key(spec, depth_onnx, H, W, config, toolkit)
    calibration.write_bytes(b"TRT-1003-EntropyCalibration2\nimage: 3c020a14\n")
    assert engine_cache_key(spec, depth_onnx, H, W, config, toolkit).digest != first.digest


def _tensorrt_usable(option: BackendOption, spec: ModelSpec | None) -> str | None:
    """This machine's real availability, except that TensorRT is pretended to be there."""
    return None if option.backend == "tensorrt" else option_unavailable_reason(option, spec)


def test_rejected_engine_falls_back_to_the_next_backend_when_allowed(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    spec = tiny_depth_spec()
    config = EngineConfig(precision="fp16", engine_cache_dir=tmp_path, device="auto")
    with caplog.at_level(logging.WARNING):
        engine = create_engine(spec, H, W, config, availability=_tensorrt_usable,
                               toolkit_factory=lambda device: FakeToolkit(error=0.5))
    assert engine.backend in ("torch", "onnxruntime")
    assert "tensorrt-cuda failed, trying the next backend" in caplog.text and "disagrees" in caplog.text
    strict = dataclasses.replace(config, allow_fallback=False)
    with pytest.raises(EngineValidationError):
        create_engine(spec, H, W, strict, availability=_tensorrt_usable,
                      toolkit_factory=lambda device: FakeToolkit(error=0.5))


def test_good_fake_engine_is_chosen_first_by_auto(tmp_path: Path) -> None:
    engine = create_engine(tiny_depth_spec(), H, W, EngineConfig(engine_cache_dir=tmp_path),
                           availability=_tensorrt_usable, toolkit_factory=lambda device: FakeToolkit())
    assert engine.backend == "tensorrt"


TENSORRT_MISSING = option_unavailable_reason(BackendOption("tensorrt", "cuda"))


@pytest.mark.skipif(TENSORRT_MISSING is not None,
                    reason=f"needs TensorRT 10 and a CUDA GPU: {TENSORRT_MISSING}")
def test_real_tensorrt_engine_matches_onnxruntime_and_is_cached(tmp_path: Path) -> None:
    import torch

    from geovis_ros.inference.tensorrt_backend import TensorRTRuntime

    spec = tiny_flow_spec()
    onnx_bytes = export_onnx(spec, spec.build_module(), H, W)
    toolkit = TensorRTRuntime("cuda")
    for precision in ("fp32", "fp16"):
        config = EngineConfig(backend="tensorrt", precision=precision, engine_cache_dir=tmp_path)
        engine = load_or_build_engine(spec, onnx_bytes, H, W, config, toolkit, _reference_factory(spec, onnx_bytes))
        reference = _reference(spec, onnx_bytes)
        assert engine.input_specs == tuple(TensorSpec(t.name, (1, 3, H, W)) for t in spec.inputs)
        inputs = spec.make_inputs(H, W, seed=9)
        on_gpu = engine.infer({k: torch.from_numpy(v).cuda() for k, v in inputs.items()})
        assert all(t.is_cuda for t in on_gpu.values())
        expected = reference(inputs)
        for name, value in engine.infer(inputs).items():
            assert np.abs(value - expected[name]).max() <= spec.tolerance(precision) * np.abs(expected[name]).max()
        key = engine_cache_key(spec, onnx_bytes, H, W, config, toolkit)
        assert EngineCache(tmp_path).load(key) is not None
