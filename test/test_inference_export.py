"""ONNX export: named tensors, fixed/dynamic size, onnx.checker, ORT vs torch parity, user ONNX files."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from test_inference_nets import tiny_depth_spec, tiny_flow_spec

from geovis_ros.inference.engine import ModelSpec, TensorSpec, registered_model_specs
from geovis_ros.inference.export import (
    OPSET,
    ExportError,
    check_onnx,
    export_onnx,
    onnx_bytes_for,
    parity_check,
    spec_from_onnx,
)

SPECS = [tiny_depth_spec(), tiny_flow_spec()]
SHIPPED, _ = registered_model_specs()
SHIPPED_SIZE = (2, 3)  # in units of the model's spatial multiple: small, non-square


def _graph_dims(onnx_bytes: bytes) -> dict[str, list]:
    model = onnx.load_from_string(onnx_bytes)
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*model.graph.input, *model.graph.output)}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_dynamic_export_is_checked_named_and_matches_torch_at_several_sizes(spec: ModelSpec) -> None:
    module = spec.build_module()
    onnx_bytes = export_onnx(spec, module, 24, 32, dynamic=True)
    model = check_onnx(spec, onnx_bytes)
    assert model.opset_import[0].version == OPSET
    dims = _graph_dims(onnx_bytes)
    assert all(dims[t.name][2:] == ["height", "width"] for t in (*spec.inputs, *spec.outputs))
    for height, width in ((24, 32), (48, 40), (16, 72)):
        report = parity_check(spec, module, onnx_bytes, height, width)  # fresh random inputs each time
        assert report.passed, report
        assert set(report.errors) == {t.name for t in spec.outputs}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_fixed_export_has_fixed_dims_and_parity(spec: ModelSpec) -> None:
    module = spec.build_module()
    onnx_bytes = export_onnx(spec, module, 24, 32, dynamic=False)
    assert _graph_dims(onnx_bytes)[spec.inputs[0].name] == [1, 3, 24, 32]
    parity_check(spec, module, onnx_bytes, 24, 32).raise_if_failed()


def test_export_is_deterministic() -> None:
    spec = tiny_flow_spec()
    assert export_onnx(spec, spec.build_module(), 24, 32) == export_onnx(spec, spec.build_module(), 24, 32)


def test_parity_failure_is_reported_clearly() -> None:
    spec = tiny_depth_spec()
    onnx_bytes = export_onnx(spec, spec.build_module(), 24, 32)
    other_weights = spec.build_module()
    with torch.no_grad():
        other_weights.conv2.bias += 1.0
    report = parity_check(spec, other_weights, onnx_bytes, 24, 32, seed=0)
    assert not report.passed
    with pytest.raises(ExportError, match="ONNX Runtime disagrees with PyTorch for tiny_depth at 32x24"):
        report.raise_if_failed()


def test_bad_onnx_and_wrong_names_raise_export_error() -> None:
    spec = tiny_depth_spec()
    with pytest.raises(ExportError, match="invalid"):
        check_onnx(spec, b"not an onnx file")
    onnx_bytes = export_onnx(spec, spec.build_module(), 24, 32)
    renamed = tiny_depth_spec(inputs=(TensorSpec("rgb", (1, 3, "height", "width")),))
    with pytest.raises(ExportError, match=r"has inputs \['image'\]"):
        check_onnx(renamed, onnx_bytes)


def test_model_with_wrong_output_count_fails_export() -> None:
    spec = tiny_depth_spec(outputs=(TensorSpec("depth", (1, 1, "height", "width")), TensorSpec("sigma", (1,))))
    with pytest.raises(ExportError, match="returned 1 outputs, expected 2"):
        export_onnx(spec, spec.build_module(), 24, 32)


def test_user_onnx_file_becomes_a_spec(tmp_path: Path) -> None:
    source = tiny_flow_spec()
    path = tmp_path / "my flow.onnx"
    path.write_bytes(export_onnx(source, source.build_module(), 24, 32))
    spec = spec_from_onnx(path)
    assert spec.name == "my_flow" and spec.onnx_path == path and spec.build_module is None
    assert spec.inputs == source.inputs and [t.name for t in spec.outputs] == ["flow", "confidence"]
    assert onnx_bytes_for(spec, 24, 32) == path.read_bytes()
    with pytest.raises(ExportError, match="cannot read"):
        spec_from_onnx(tmp_path / "missing.onnx")


@pytest.mark.skipif(not SHIPPED, reason="geovis_ros.inference.registry lists no shipped models yet")
@pytest.mark.filterwarnings("ignore:no shipped weights")
@pytest.mark.parametrize("spec", SHIPPED, ids=lambda s: s.name)
def test_shipped_model_exports_with_parity(spec: ModelSpec) -> None:
    height, width = (units * spec.spatial_multiple for units in SHIPPED_SIZE)
    if spec.build_module is None:
        check_onnx(spec, onnx_bytes_for(spec, height, width))
        return
    module = spec.build_module()
    onnx_bytes = export_onnx(spec, module, height, width)
    parity_check(spec, module, onnx_bytes, height, width).raise_if_failed()
