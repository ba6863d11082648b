"""``geovis bench`` and ``geovis build-engines`` end to end (CI size)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_inference_nets import tiny_depth_spec, tiny_flow_spec

from geovis_ros.cli import main
from geovis_ros.inference import bench
from geovis_ros.inference.export import export_onnx
from geovis_ros.inference.select import BackendOption, option_unavailable_reason


@pytest.fixture
def tiny_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "registered_model_specs", lambda: ((tiny_depth_spec(),), None))


def test_bench_quick_prints_the_table_and_writes_json(tmp_path: Path, tiny_registry,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "p50 ms" in printed and "dis-ultrafast" in printed and "dis-medium" in printed
    report = json.loads(out.read_text())
    rows = {(r["name"], r["backend"]) for r in report["results"]}
    assert {("dis-ultrafast", "opencv"), ("dis-fast", "opencv"), ("dis-medium", "opencv"),
            ("dis-medium-seeded", "opencv"), ("tiny_depth", "onnxruntime"), ("tiny_depth", "torch")} <= rows
    for row in report["results"]:
        assert row["size"] == "160x120" and row["iterations"] == 10
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["throughput_fps"] > 0
    if option_unavailable_reason(BackendOption("tensorrt", "cuda")) is not None:
        assert any("tensorrt-cuda" in s and "not installed" in s for s in report["skipped"])
    assert report["machine"]["physical_cores"] >= 1


def test_bench_user_onnx_file(tmp_path: Path, tiny_registry, capsys: pytest.CaptureFixture) -> None:
    spec = tiny_flow_spec()
    path = tmp_path / "user_flow.onnx"
    path.write_bytes(export_onnx(spec, spec.build_module(), 24, 32))
    assert main(["bench", "--quick", "--no-dis", "--models", "tiny_depth", "--model-onnx", str(path),
                 "--backends", "onnxruntime-cpu,torch-cpu"]) == 0
    printed = capsys.readouterr().out
    assert "user_flow" in printed and "dis-" not in printed
    assert "user_flow on torch-cpu: model user_flow ships only an ONNX file" in printed


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "640by480"], "bad size"), (["--backends", "tpu"], "unknown backend"),
    (["--models", "nope"], "unknown model"), (["--model-onnx", "/nonexistent.onnx"], "no such file"),
    (["--precisions", "fp64"], "--precisions"),
])
def test_bench_bad_arguments_exit_2_with_a_message(argv: list[str], message: str, tiny_registry,
                                                   capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_parse_sizes_and_stats() -> None:
    assert bench.parse_sizes("320x240, 640x480") == [(240, 320), (480, 640)]
    samples = bench.measure(lambda: None, warmup=1, iterations=5)
    assert len(samples) == 5 and all(s >= 0 for s in samples)
    result = bench._result("m", "b", "cpu", "fp32", (240, 320), (256, 320), "wall-clock", [1.0, 2.0, 3.0, 4.0])
    assert (result.p50_ms, result.mean_ms, result.throughput_fps, result.network_size) == (2.5, 2.5, 400.0,
                                                                                          "320x256")


def test_network_size_pads_dynamic_models_and_keeps_fixed_ones(tmp_path: Path) -> None:
    assert bench.network_size(tiny_depth_spec(), (240, 320)) == (240, 320)
    assert bench.network_size(tiny_depth_spec(spatial_multiple=32), (240, 320)) == (256, 320)
    from geovis_ros.inference.export import spec_from_onnx

    spec = tiny_depth_spec()
    path = tmp_path / "fixed.onnx"
    path.write_bytes(export_onnx(spec, spec.build_module(), 24, 32, dynamic=False))
    assert bench.network_size(spec_from_onnx(path), (240, 320)) == (24, 32)


TENSORRT_MISSING = option_unavailable_reason(BackendOption("tensorrt", "cuda"))


@pytest.mark.skipif(TENSORRT_MISSING is None, reason="checks the refusal on a machine without TensorRT/CUDA")
def test_build_engines_without_tensorrt_exits_2_with_a_clear_message(capsys: pytest.CaptureFixture) -> None:
    assert main(["build-engines"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geovis build-engines: error: cannot build TensorRT engines on this machine")
    assert TENSORRT_MISSING in err and "Traceback" not in err
