"""TensorRT 10 and 11 API surfaces, as fake ``tensorrt`` modules, through the real build code.

The 10.x fake has the precision flags (``BuilderFlag.FP16``/``INT8``/``TF32``) and
``IInt8EntropyCalibrator2``; the 11.x fake has none of them and accepts only strongly typed networks
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), so any use of a removed API is an
AttributeError here. The 'engine' a fake builds is the ONNX it was given; a toolkit around the fake
loads it with ONNX Runtime, so the build-time numerical check and the cache run for real.
"""

from __future__ import annotations

import enum
import logging
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_inference_nets import tiny_depth_spec
from test_inference_tensorrt import FAKE_ENGINE_HEADER, H, W, WrongByEngine

from geovis_ros.inference.cache import BuildOutput
from geovis_ros.inference.engine import EngineConfig, InferenceError, ModelSpec, output_errors
from geovis_ros.inference.export import export_onnx, onnx_bytes_for
from geovis_ros.inference.onnxruntime_backend import OnnxRuntimeEngine
from geovis_ros.inference.registry import get_spec
from geovis_ros.inference.select import create_engine
from geovis_ros.inference.tensorrt_backend import (
    BuildRequest,
    build_serialized_engine,
    engine_cache_key,
    fp16_onnx,
    is_strongly_typed_only,
    load_or_build_engine,
)


def fake_tensorrt(major: int) -> types.ModuleType:
    """A ``tensorrt`` module with the 10.x or 11.x builder surface; records what the build used."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = f"{major}.0.1"
    trt.built = []  # (network flags, set flags, onnx bytes) per build
    flag_names = ["FP16", "INT8", "TF32", "REFIT"] if major == 10 else ["REFIT", "VERSION_COMPATIBLE"]
    trt.BuilderFlag = enum.Enum("BuilderFlag", flag_names)
    creation = ["EXPLICIT_BATCH", "STRONGLY_TYPED"] if major == 10 else ["STRONGLY_TYPED"]
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation, start=0)
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE"])

    class Tensor:
        def __init__(self, name):
            self.name = name

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.inputs = []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, index):
            return self.inputs[index]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0

        def parse(self, data):
            model = onnx.load_from_string(data)
            initializers = {i.name for i in model.graph.initializer}
            self.network.inputs = [Tensor(i.name) for i in model.graph.input if i.name not in initializers]
            self.network.onnx = data
            return True

    class TimingCache:
        def serialize(self):
            return b"timing"

    class Config:
        def __init__(self):
            self.flags = set()
            self.profiles = []

        def set_memory_pool_limit(self, pool, size):
            assert pool is trt.MemoryPoolType.WORKSPACE and size > 0

        def set_flag(self, flag):
            self.flags.add(flag.name)

        def clear_flag(self, flag):
            self.flags.discard(flag.name)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def create_timing_cache(self, blob):
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing = cache

        def get_timing_cache(self):
            return TimingCache()

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = (low, opt, high)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            if major >= 11 and not flags & strongly:
                raise TypeError("TensorRT 11 builds strongly typed networks only")
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.built.append((network.flags, frozenset(config.flags), network.onnx))
            return FAKE_ENGINE_HEADER + network.onnx

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    if major == 10:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return trt


class ModuleToolkit:
    """A TensorRTToolkit whose build is the real :func:`build_serialized_engine` on a fake module."""

    gpu_name = "Fake GPU"
    compute_capability = "9.0"

    def __init__(self, trt: types.ModuleType) -> None:
        self.trt = trt
        self.version = trt.__version__
        self.strongly_typed = is_strongly_typed_only(trt)

    def build(self, request: BuildRequest, timing_cache: bytes | None) -> BuildOutput:
        return build_serialized_engine(self.trt, None, request, timing_cache)

    def load(self, engine_bytes: bytes, spec: ModelSpec, height: int, width: int, precision: str) -> WrongByEngine:
        inner = OnnxRuntimeEngine(spec, engine_bytes[len(FAKE_ENGINE_HEADER):], height, width)
        return WrongByEngine(inner, 0.0, precision)


@pytest.fixture(scope="module")
def depth_onnx() -> bytes:
    spec = tiny_depth_spec()
    return export_onnx(spec, spec.build_module(), H, W)


def _build(toolkit: ModuleToolkit, onnx_bytes: bytes, tmp_path: Path, precision: str, **config):
    spec = tiny_depth_spec()
    engine_config = EngineConfig(backend="tensorrt", precision=precision, engine_cache_dir=tmp_path, **config)
    return load_or_build_engine(spec, onnx_bytes, H, W, engine_config, toolkit,
                                lambda: OnnxRuntimeEngine(spec, onnx_bytes, H, W))


def test_tensorrt_10_builds_fp16_with_its_precision_flag(tmp_path: Path, depth_onnx: bytes) -> None:
    trt = fake_tensorrt(10)
    engine = _build(ModuleToolkit(trt), depth_onnx, tmp_path, "fp16")
    (network_flags, flags, built_onnx), = trt.built
    assert network_flags == 0 and flags == {"FP16"} and built_onnx == depth_onnx
    assert engine.precision == "fp16"
    _build(ModuleToolkit(trt), depth_onnx, tmp_path, "fp32")
    assert trt.built[-1][1] == frozenset()  # fp32: TF32 cleared


def test_tensorrt_10_int8_uses_its_calibrator(tmp_path: Path, depth_onnx: bytes) -> None:
    trt = fake_tensorrt(10)
    calibration = tmp_path / "calibration.cache"
    calibration.write_bytes(b"scales")
    request = BuildRequest(depth_onnx, {"image": (1, 3, H, W)}, "int8", 64, calibration)
    build_serialized_engine(trt, None, request, None)
    assert trt.built[-1][1] == {"FP16", "INT8"}


def test_tensorrt_11_builds_fp16_strongly_typed_from_a_converted_onnx(tmp_path: Path, depth_onnx: bytes) -> None:
    trt = fake_tensorrt(11)
    toolkit = ModuleToolkit(trt)
    assert toolkit.strongly_typed and not hasattr(trt, "IInt8EntropyCalibrator2")
    engine = _build(toolkit, depth_onnx, tmp_path, "fp16")
    (network_flags, flags, built_onnx), = trt.built
    assert network_flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) and flags == frozenset()
    model = onnx.load_from_string(built_onnx)
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert {i.type.tensor_type.elem_type for i in (*model.graph.input, *model.graph.output)} == {float32}
    assert any(t.data_type == float16 for t in model.graph.initializer)
    # The converted model is what is keyed, and what was checked against the fp32 reference.
    spec = tiny_depth_spec()
    key = engine_cache_key(spec, depth_onnx, H, W, EngineConfig(precision="fp16"), toolkit)
    assert key.onnx_sha256 != engine_cache_key(spec, depth_onnx, H, W, EngineConfig(), toolkit).onnx_sha256
    assert "typing=strong" in key.builder_flags
    inputs = spec.make_inputs(H, W, seed=3)
    reference = OnnxRuntimeEngine(spec, depth_onnx, H, W).infer(inputs)["depth"]
    error = np.abs(engine.infer(inputs)["depth"] - reference).max() / np.abs(reference).max()
    assert 0 < error < spec.fp16_tolerance
    _build(toolkit, depth_onnx, tmp_path, "fp16")
    assert len(trt.built) == 1  # cached under the converted model's hash


def test_tensorrt_11_int8_needs_qdq_and_names_modelopt(tmp_path: Path, depth_onnx: bytes) -> None:
    toolkit = ModuleToolkit(fake_tensorrt(11))
    with pytest.raises(InferenceError, match="explicit Q/DQ .*NVIDIA ModelOpt"):
        _build(toolkit, depth_onnx, tmp_path, "int8")
    assert toolkit.trt.built == []


def test_removed_api_failure_falls_back_once_and_is_remembered(tmp_path: Path, caplog) -> None:
    class OldCode(ModuleToolkit):
        """Code written for 10.x meeting 11.x (the bug of issue 11): ``BuilderFlag.FP16`` is gone."""

        def build(self, request: BuildRequest, timing_cache: bytes | None) -> BuildOutput:
            self.trt.Builder(None).create_builder_config().set_flag(self.trt.BuilderFlag.FP16)
            raise AssertionError("unreachable on 11.x")

    calls = []

    def factory(device: str) -> OldCode:
        calls.append(device)
        return OldCode(fake_tensorrt(11))

    def usable(option, spec):
        return None if option.label in ("tensorrt-cuda", "onnxruntime-cpu") else "not here"

    failed: dict[str, str] = {}
    config = EngineConfig(precision="fp16", engine_cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        engine = create_engine(tiny_depth_spec(), H, W, config, availability=usable, toolkit_factory=factory,
                               failed=failed)
    assert engine.backend == "onnxruntime"
    assert "AttributeError" in failed["tensorrt-cuda"] and "FP16" in failed["tensorrt-cuda"]
    assert "never retried" in caplog.text
    again = create_engine(tiny_depth_spec(), H, 2 * W, config, availability=usable, toolkit_factory=factory,
                          failed=failed)
    assert again.backend == "onnxruntime" and len(calls) == 1  # no second build attempt for another size


@pytest.mark.parametrize("name", ["depth", "flow"])
def test_fp16_conversion_of_the_shipped_networks_stays_within_their_tolerance(name: str) -> None:
    spec, height, width = get_spec(name), 48, 64  # the shipped networks need multiples of 16
    original = onnx_bytes_for(spec, height, width)
    converted = fp16_onnx(original)
    inputs = spec.make_inputs(height, width, seed=2)
    expected = OnnxRuntimeEngine(spec, original, height, width).infer(inputs)
    errors = output_errors(OnnxRuntimeEngine(spec, converted, height, width).infer(inputs), expected)
    assert 0 < max(errors.values()) < spec.fp16_tolerance
