"""The GPU path: one shared CUDA stream per device, pinned staging buffers, TensorRT on the shared stream.

Without a GPU the logic runs against fakes that mirror the CUDA APIs it uses (a stream with
``cuda_stream`` / ``record_event``, a TensorRT execution context that reads and writes the bound
addresses); the CUDA tests run the real thing where torch has a CUDA device.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from test_inference_nets import tiny_flow_spec

from geovis_ros.apps.pipeline_bench import engine_runs
from geovis_ros.frame import Frame
from geovis_ros.inference import gpu
from geovis_ros.inference.bench import gpu_rows_absent_note
from geovis_ros.inference.devices import cuda_unavailable_reason
from geovis_ros.inference.engine import Engine, EngineConfig, ModelSpec, TensorSpec, relative_error
from geovis_ros.inference.gpu import DeviceStream, SharedStreams, shared_stream
from geovis_ros.inference.tensorrt_backend import TensorRTEngine
from geovis_ros.inference.torch_backend import TorchEngine
from geovis_ros.pipeline import networks
from geovis_ros.pipeline.networks import FlowStage, NetworkConfig
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

CUDA_MISSING = cuda_unavailable_reason()
needs_cuda = pytest.mark.skipif(CUDA_MISSING is not None, reason=f"needs a CUDA GPU: {CUDA_MISSING}")
H, W = 4, 6


class FakeEvent:
    def __init__(self, stream: FakeStream) -> None:
        self._stream = stream

    def synchronize(self) -> None:
        self._stream.waits += 1


class FakeStream:
    """``torch.cuda.Stream`` as the GPU path uses it: a raw handle and events to wait on."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.cuda_stream = 0x7000 + index
        self.waits = 0

    def record_event(self) -> FakeEvent:
        return FakeEvent(self)


class HostDeviceStream(DeviceStream):
    """A DeviceStream whose tensors live in host memory: ``running`` has no CUDA device to make current."""

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        yield


@pytest.fixture
def fake_streams(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The process's stream registry made of FakeStreams; returns the device indices it created streams for."""
    created: list[int] = []

    def factory(index: int) -> FakeStream:
        created.append(index)
        return FakeStream(index)

    monkeypatch.setattr(gpu, "_STREAMS", SharedStreams(factory))
    return created


class CountingAllocator:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], torch.dtype]] = []

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        self.calls.append((shape, dtype))
        return torch.empty(shape, dtype=dtype)


def test_one_stream_per_device_made_once_even_from_many_threads() -> None:
    made: list[int] = []
    streams = SharedStreams(lambda index: made.append(index) or object())
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(streams.get(0))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8 and all(s is seen[0] for s in seen)
    assert streams.get(1) is not seen[0] and streams.get(1) is streams.get(1)
    assert made == [0, 1]


def test_shared_stream_is_per_device_index_and_refuses_a_cpu(fake_streams: list[int]) -> None:
    assert shared_stream("cuda:1") is shared_stream(torch.device("cuda", 1))
    assert shared_stream("cuda:0") is not shared_stream("cuda:1")
    assert fake_streams == [1, 0]
    assert DeviceStream("cuda:1").stream is shared_stream("cuda:1")
    assert DeviceStream("cuda:1").handle == 0x7001
    with pytest.raises(ValueError, match="needs a CUDA device"):
        shared_stream("cpu")


def test_pinned_buffers_are_reused_per_name_and_shape_and_replaced_when_it_changes() -> None:
    allocator = CountingAllocator()
    stream = HostDeviceStream("cpu", FakeStream(0), allocator)
    first = np.arange(12, dtype=np.float32).reshape(3, 4)
    a = stream.pinned("image", first)
    stream.synchronize()
    b = stream.pinned("image", first[::-1])  # same shape, other values (a non-contiguous view)
    assert b is a and np.array_equal(b.numpy(), first[::-1])
    c = stream.pinned("flow_init", first)
    assert c is not a
    d = stream.pinned("image", np.zeros((2, 6), np.float32))
    e = stream.pinned("image", np.zeros((2, 6), np.uint8))
    assert d is not a and e is not d and e.dtype == torch.uint8
    assert allocator.calls == [((3, 4), torch.float32), ((3, 4), torch.float32), ((2, 6), torch.float32),
                               ((2, 6), torch.uint8)]


def test_a_staged_buffer_is_not_rewritten_before_the_stream_has_copied_it() -> None:
    fake = FakeStream(0)
    stream = HostDeviceStream("cpu", fake, CountingAllocator())
    stream.pinned("image", np.ones((2, 2), np.float32))
    stream.pinned("flow_init", np.ones((2, 2), np.float32))  # another buffer: no wait
    assert fake.waits == 0
    stream.pinned("image", np.zeros((2, 2), np.float32))  # the first copy may still be queued: wait first
    assert fake.waits == 1
    stream.synchronize()
    stream.pinned("image", np.ones((2, 2), np.float32))  # nothing pending since the wait
    assert fake.waits == 2


def test_download_waits_once_and_returns_arrays_the_caller_owns() -> None:
    fake = FakeStream(0)
    allocator = CountingAllocator()
    stream = HostDeviceStream("cpu", fake, allocator)
    outputs = {"depth": torch.full((1, 1, H, W), 2.0), "flow": torch.full((1, 2, H, W), -1.0)}
    first = stream.download(outputs)
    assert fake.waits == 1
    assert first["depth"].dtype == np.float32 and first["depth"].shape == (1, 1, H, W)
    assert (first["depth"] == 2.0).all() and (first["flow"] == -1.0).all()
    second = stream.download({"depth": torch.full((1, 1, H, W), 5.0), "flow": torch.zeros(1, 2, H, W)})
    assert fake.waits == 2 and len(allocator.calls) == 2  # the same two buffers again
    assert (first["depth"] == 2.0).all() and (second["depth"] == 5.0).all()


def test_upload_stages_numpy_and_passes_tensors_through() -> None:
    stream = HostDeviceStream("cpu", FakeStream(0), CountingAllocator())
    tensor = torch.ones(1, 3, H, W)
    uploaded = stream.upload({"image1": tensor, "image2": np.full((1, 3, H, W), 3.0, np.float32)})
    assert uploaded["image1"] is tensor
    assert torch.equal(uploaded["image2"], torch.full((1, 3, H, W), 3.0))
    stream.synchronize()
    stream.upload({"image2": np.zeros((1, 3, H, W), np.float32)})  # restages the same pinned buffer
    assert torch.equal(uploaded["image2"], torch.full((1, 3, H, W), 3.0))  # the caller's tensor is its own


# -- TensorRT on the shared stream, with a fake TensorRT that mirrors the Python API -----------------
def _floats_at(address: int, count: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(address))


class FakeContext:
    """``IExecutionContext``: computes ``depth = 2 * image + 1`` from and into the bound addresses."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.addresses: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.stream_handles: list[int] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes["image"]

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.stream_handles.append(stream_handle)
        _floats_at(self.addresses["depth"], self.count)[:] = 2 * _floats_at(self.addresses["image"], self.count) + 1
        return True


class FakeCudaEngine:
    """``ICudaEngine``: one float32 input ``image``, one output ``depth`` of the same shape."""

    def __init__(self) -> None:
        self.num_io_tensors = 2
        self.context = FakeContext(H * W)

    def create_execution_context(self) -> FakeContext:
        return self.context

    def get_tensor_name(self, index: int) -> str:
        return ("image", "depth")[index]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name == "image" else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> str:
        return "FLOAT"


FAKE_TRT = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="INPUT"), nptype=lambda dtype: np.float32)
PLANE = (1, 1, "height", "width")
PLANE_SPEC = ModelSpec("plane", (TensorSpec("image", PLANE),), (TensorSpec("depth", PLANE),),
                       build_module=torch.nn.Identity)


def _trt_engine(stream: DeviceStream) -> tuple[TensorRTEngine, FakeContext]:
    engine = FakeCudaEngine()
    return TensorRTEngine(FAKE_TRT, engine, PLANE_SPEC, H, W, "fp32", torch.device("cpu"), stream), engine.context


def test_tensorrt_enqueues_on_the_shared_stream_and_stages_through_pinned_buffers(fake_streams: list[int]) -> None:
    allocator = CountingAllocator()
    stream = HostDeviceStream("cpu", shared_stream("cuda:0"), allocator)
    engine, context = _trt_engine(stream)
    image = np.random.default_rng(0).random((1, 1, H, W), dtype=np.float32)
    for _ in range(2):
        out = engine.infer({"image": image})
        assert isinstance(out["depth"], np.ndarray)
        np.testing.assert_allclose(out["depth"], 2 * image + 1)
    assert context.stream_handles == [shared_stream("cuda:0").cuda_stream] * 2
    assert shared_stream("cuda:0").waits == 2  # one wait per call, when the outputs go to the host
    assert [shape for shape, _ in allocator.calls] == [(1, 1, H, W), (1, 1, H, W)]  # one in, one out: reused


def test_tensorrt_binds_device_tensors_directly_and_hands_back_tensors(fake_streams: list[int]) -> None:
    engine, context = _trt_engine(HostDeviceStream("cpu", shared_stream("cuda:0"), CountingAllocator()))
    image = torch.rand(1, 1, H, W)
    out = engine.infer({"image": image})
    assert context.addresses["image"] == image.data_ptr()  # no copy into the engine's buffer
    assert isinstance(out["depth"], torch.Tensor) and torch.allclose(out["depth"], 2 * image + 1)
    assert context.addresses["depth"] != out["depth"].data_ptr()  # a copy the caller owns
    assert shared_stream("cuda:0").waits == 0  # tensors stay on the device: no wait


# -- what the benchmarks say about GPU rows --------------------------------------------------------
def test_pipeline_bench_adds_gpu_rows_only_where_cuda_is_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    import geovis_ros.apps.pipeline_bench as pipeline_bench

    monkeypatch.setattr(pipeline_bench, "cuda_unavailable_reason", lambda: None)
    assert engine_runs("onnxruntime", "cpu", "torch") == (
        [{"backend": "onnxruntime", "device": "cpu"}, {"backend": "torch", "device": "cuda"}], None)
    assert engine_runs("torch", "cuda", "torch") == ([{"backend": "torch", "device": "cuda"}], None)
    assert engine_runs("onnxruntime", "cpu", "none") == ([{"backend": "onnxruntime", "device": "cpu"}],
                                                         "no GPU rows: --gpu-backend none")
    monkeypatch.setattr(pipeline_bench, "cuda_unavailable_reason", lambda: "no driver")
    assert engine_runs("onnxruntime", "cpu", "torch") == ([{"backend": "onnxruntime", "device": "cpu"}],
                                                          "no GPU rows: no driver")


@pytest.mark.skipif(CUDA_MISSING is None, reason="checks the line printed on a machine without CUDA")
def test_without_cuda_the_benchmarks_say_why_in_one_line() -> None:
    assert gpu_rows_absent_note() == f"no GPU rows: {CUDA_MISSING}"
    assert engine_runs("onnxruntime", "cpu", "torch")[1] == f"no GPU rows: {CUDA_MISSING}"


# -- the real thing ----------------------------------------------------------------------------------
@needs_cuda
def test_torch_cuda_engine_runs_on_the_shared_stream_with_pinned_buffers() -> None:
    spec = tiny_flow_spec()
    engine = TorchEngine(spec, spec.build_module(), 24, 32, device="cuda")
    reference = TorchEngine(spec, spec.build_module(), 24, 32)
    inputs = spec.make_inputs(24, 32)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # a caller on another stream gets correct numpy and torch results
        out = engine.infer(inputs)
        on_device = engine.infer({k: torch.from_numpy(v).cuda() for k, v in inputs.items()})
    expected = reference.infer(inputs)
    for name, value in expected.items():
        np.testing.assert_array_equal(out[name], on_device[name].cpu().numpy())
        assert relative_error(out[name], value) < 1e-2  # cuDNN convolutions use TF32 by default
    staging = engine._stream
    assert staging is not None and staging.stream is shared_stream("cuda")
    assert all(buffer.is_pinned() for buffer in staging._buffers.values()) and staging._buffers


@needs_cuda
def test_device_stream_round_trip_on_a_real_gpu() -> None:
    stream = DeviceStream("cuda")
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    with stream.running():
        assert torch.cuda.current_stream() == shared_stream("cuda")
        uploaded = stream.upload({"x": array})
        back = stream.download({"x": uploaded["x"] * 2})
    assert uploaded["x"].is_cuda and np.array_equal(back["x"], array * 2)


# -- the flow stage keeps the previous frame on the GPU ----------------------------------------------
class CudaLabelledEngine:
    """A CPU engine that says it runs on ``cuda:0`` (so the stage takes its GPU path); records its inputs."""

    def __init__(self, inner: Engine) -> None:
        self.inner, self.device, self.backend, self.precision = inner, "cuda:0", "torch", "fp32"
        self.calls: list[Mapping[str, Any]] = []

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(inputs)
        return self.inner.infer(inputs)


def test_flow_stage_on_a_gpu_uploads_each_frame_once_and_waits_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = render_sequence(SynthConfig(scene="room", trajectory="handheld", frames=3, width=160, height=120,
                                           seed=3), with_flow=False)
    frames = [Frame(f.stamp_ns, f.rgb, f.intrinsics, "cam") for f in rendered]
    config = NetworkConfig(engine=EngineConfig(backend="torch", device="cpu"), input_width=160,
                           flow_refinement="network")
    on_cpu, on_gpu = FlowStage(config), FlowStage(config)
    fake = FakeStream(0)
    staging = HostDeviceStream("cpu", fake, CountingAllocator())
    devices: list[str] = []
    monkeypatch.setattr(networks, "DeviceStream", lambda device: devices.append(device) or staging)
    engines: dict[tuple[int, int], CudaLabelledEngine] = {}

    def engine(width: int, height: int) -> CudaLabelledEngine:
        return engines.setdefault((width, height), CudaLabelledEngine(on_cpu.engine(width, height)))

    monkeypatch.setattr(on_gpu, "engine", engine)
    for index, frame in enumerate(frames):
        expected, got = on_cpu(frame), on_gpu(frame)
        if index == 0:
            assert expected is None and got is None
            continue
        assert got is not None and expected is not None
        np.testing.assert_array_equal(got.flow, expected.flow)
        assert fake.waits == index  # one wait per frame, when the flow goes to the host
    (calls,) = [e.calls for e in engines.values()]
    names = on_gpu.model.names
    assert all(isinstance(v, torch.Tensor) for call in calls for v in call.values())
    assert calls[1][names["image1"]] is calls[0][names["image2"]]  # the previous frame was not uploaded again
    assert set(devices) == {"cuda:0"}
