"""torch and ONNX Runtime engines, and backend auto-selection with its logged reasons."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from test_inference_nets import tiny_depth_spec, tiny_flow_spec

from geovis_ros.inference.devices import cuda_unavailable_reason, physical_cpu_cores
from geovis_ros.inference.engine import (
    BackendUnavailableError,
    Engine,
    EngineConfig,
    InputError,
)
from geovis_ros.inference.export import export_onnx
from geovis_ros.inference.onnxruntime_backend import OnnxRuntimeEngine, session_options
from geovis_ros.inference.select import (
    AUTO_ORDER,
    BackendOption,
    backend_order,
    create_engine,
    option_unavailable_reason,
)
from geovis_ros.inference.torch_backend import TorchEngine

H, W = 24, 32
CUDA_MISSING = cuda_unavailable_reason()
needs_cuda = pytest.mark.skipif(CUDA_MISSING is not None, reason=f"needs a CUDA GPU: {CUDA_MISSING}")


@pytest.fixture(scope="module")
def flow_engines() -> tuple[TorchEngine, OnnxRuntimeEngine]:
    spec = tiny_flow_spec()
    onnx_bytes = export_onnx(spec, spec.build_module(), H, W)
    return TorchEngine(spec, spec.build_module(), H, W), OnnxRuntimeEngine(spec, onnx_bytes, H, W)


def test_engines_implement_the_protocol_and_agree(flow_engines) -> None:
    inputs = tiny_flow_spec().make_inputs(H, W, seed=2)
    results = []
    for engine in flow_engines:
        assert isinstance(engine, Engine)
        assert (engine.device, engine.precision) == ("cpu", "fp32")
        assert [t.name for t in engine.output_specs] == ["flow", "confidence"]
        out = engine.infer(inputs)
        assert list(out) == ["flow", "confidence"]
        assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in out.values())
        results.append(out)
    np.testing.assert_allclose(results[0]["flow"], results[1]["flow"], rtol=1e-4, atol=1e-6)


def test_torch_inputs_give_torch_outputs_and_other_sizes_work(flow_engines) -> None:
    inputs = {k: torch.from_numpy(v) for k, v in tiny_flow_spec().make_inputs(2 * H, W, seed=4).items()}
    for engine in flow_engines:
        out = engine.infer(inputs)
        assert all(isinstance(v, torch.Tensor) and v.shape[-2:] == (2 * H, W) for v in out.values())


def test_outputs_belong_to_the_caller(flow_engines) -> None:
    inputs = tiny_flow_spec().make_inputs(H, W, seed=1)
    for engine in flow_engines:
        first = engine.infer(inputs)["flow"]
        kept = first.copy()
        engine.infer(tiny_flow_spec().make_inputs(H, W, seed=2))
        np.testing.assert_array_equal(first, kept)


def test_bad_inputs_raise_input_error(flow_engines) -> None:
    for engine in flow_engines:
        with pytest.raises(InputError, match="missing"):
            engine.infer({"image0": np.zeros((1, 3, H, W), np.float32)})
        with pytest.raises(InputError, match="dtype"):
            engine.infer({n: np.zeros((1, 3, H, W), np.uint8) for n in ("image0", "image1")})


def test_warmup_runs(flow_engines) -> None:
    for engine in flow_engines:
        engine.warmup(1)


def test_torch_cpu_runs_fp32_even_if_fp16_is_asked() -> None:
    spec = tiny_depth_spec()
    assert TorchEngine(spec, spec.build_module(), H, W, precision="fp16").precision == "fp32"


def _fake_sysfs(root, core_of_cpu: dict[int, int], cpu_max: str | None):
    for cpu, core in core_of_cpu.items():
        topology = root / f"devices/system/cpu/cpu{cpu}/topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    if cpu_max is not None:
        (root / "fs/cgroup").mkdir(parents=True)
        (root / "fs/cgroup/cpu.max").write_text(cpu_max)
    return root


def test_physical_cores_count_hyperthread_siblings_once_and_respect_cgroup_quota(tmp_path) -> None:
    smt = {0: 0, 1: 1, 2: 0, 3: 1}  # 4 logical CPUs on 2 cores
    assert physical_cpu_cores(_fake_sysfs(tmp_path / "a", smt, None), cpus=range(4)) == 2
    assert physical_cpu_cores(_fake_sysfs(tmp_path / "b", smt, "max 100000\n"), cpus=range(4)) == 2
    assert physical_cpu_cores(_fake_sysfs(tmp_path / "c", smt, "50000 100000\n"), cpus=range(4)) == 1
    assert physical_cpu_cores(tmp_path / "empty", cpus=[0, 5, 7]) == 3  # no topology: count logical CPUs


def test_onnxruntime_threads_are_physical_cores() -> None:
    cores = physical_cpu_cores()
    assert 1 <= cores <= (os.cpu_count() or 1)
    options = session_options()
    assert options.intra_op_num_threads == cores and options.inter_op_num_threads == 1
    assert session_options(3).intra_op_num_threads == 3


def test_onnxruntime_rejects_a_graph_with_other_names() -> None:
    spec = tiny_depth_spec()
    onnx_bytes = export_onnx(spec, spec.build_module(), H, W)
    renamed = tiny_depth_spec(outputs=(tiny_flow_spec().outputs[0],))
    with pytest.raises(Exception, match="the spec expects"):
        OnnxRuntimeEngine(renamed, onnx_bytes, H, W)


def test_auto_order_is_tensorrt_torch_cuda_onnxruntime_torch_cpu() -> None:
    assert [o.label for o in AUTO_ORDER] == ["tensorrt-cuda", "torch-cuda", "onnxruntime-cuda", "onnxruntime-cpu",
                                             "torch-cpu"]


@pytest.mark.skipif(CUDA_MISSING is None, reason="checks the reasons given on a machine without CUDA")
def test_auto_on_this_machine_picks_onnxruntime_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    order = dict(backend_order(EngineConfig(), tiny_depth_spec()))
    assert "tensorrt is not installed" in order[BackendOption("tensorrt", "cuda")]
    assert "CUDA" in order[BackendOption("torch", "cuda")]
    assert order[BackendOption("onnxruntime", "cpu")] is None
    with caplog.at_level(logging.INFO, logger="geovis_ros.inference.select"):
        engine = create_engine(tiny_depth_spec(), H, W, EngineConfig())
    assert engine.backend == "onnxruntime"
    line = next(r.getMessage() for r in caplog.records if "using" in r.getMessage())
    assert "using onnxruntime-cpu" in line
    assert "tensorrt-cuda: tensorrt is not installed" in line and "torch-cuda: " in line


def test_explicit_backend_and_device() -> None:
    spec = tiny_depth_spec()
    assert create_engine(spec, H, W, EngineConfig(backend="torch")).backend == "torch"
    assert create_engine(spec, H, W, EngineConfig(backend="onnxruntime", device="cpu")).device == "cpu"
    order = backend_order(EngineConfig(device="cpu"), spec)
    assert dict(order)[BackendOption("tensorrt", "cuda")] == "device is set to cpu"


def test_unusable_backend_without_fallback_raises_with_the_reason() -> None:
    def nothing_but_torch(option: BackendOption, spec) -> str | None:
        return None if option.label == "torch-cpu" else f"{option.backend} disabled in this test"

    config = EngineConfig(backend="onnxruntime", device="cpu", allow_fallback=False)
    with pytest.raises(BackendUnavailableError, match="onnxruntime-cpu: onnxruntime disabled in this test"):
        create_engine(tiny_depth_spec(), H, W, config, availability=nothing_but_torch)
    fallback = EngineConfig(backend="onnxruntime", device="cpu")
    assert create_engine(tiny_depth_spec(), H, W, fallback, availability=nothing_but_torch).backend == "torch"


def test_onnx_only_model_cannot_use_torch() -> None:
    spec = tiny_depth_spec(build_module=None, onnx_path="/nonexistent.onnx")
    assert "ships only an ONNX file" in option_unavailable_reason(BackendOption("torch", "cpu"), spec)


def test_network_size_must_be_a_multiple() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        create_engine(tiny_depth_spec(), 30, 32, EngineConfig())


@needs_cuda
def test_torch_cuda_fp16_keeps_data_on_the_gpu() -> None:
    spec = tiny_flow_spec()
    engine = TorchEngine(spec, spec.build_module(), H, W, device="cuda", precision="fp16")
    inputs = {k: torch.from_numpy(v).cuda() for k, v in spec.make_inputs(H, W).items()}
    out = engine.infer(inputs)
    assert engine.precision == "fp16"
    assert all(v.is_cuda and v.dtype == torch.float32 for v in out.values())
    reference = TorchEngine(spec, spec.build_module(), H, W).infer(spec.make_inputs(H, W))
    error = np.abs(out["flow"].cpu().numpy() - reference["flow"]).max() / np.abs(reference["flow"]).max()
    assert error < spec.fp16_tolerance
