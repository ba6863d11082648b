"""The Engine interface types: specs, config validation, input checking, error measure, registry."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from test_inference_nets import tiny_depth_spec, tiny_flow_spec

from geovis_ros.inference import engine as engine_module
from geovis_ros.inference.engine import (
    EngineConfig,
    InputError,
    ModelSpec,
    TensorSpec,
    check_inputs,
    default_engine_cache_dir,
    registered_model_specs,
    relative_error,
)


def test_tensor_spec_resolves_symbols_and_rejects_bad_dims() -> None:
    spec = TensorSpec("image", ("batch", 3, "height", "width"))
    assert spec.is_dynamic
    assert spec.resolved(48, 64).concrete_shape == (1, 3, 48, 64)
    assert spec.shape_with({"batch": 2, "height": 4, "width": 5}) == (2, 3, 4, 5)
    assert spec.shape_with({"height": 4}) is None
    with pytest.raises(ValueError, match="symbolic"):
        _ = spec.concrete_shape
    with pytest.raises(ValueError, match="> 0"):
        TensorSpec("x", (0, 3))
    with pytest.raises(TypeError):
        TensorSpec("x", (1,), "float33")


def test_model_spec_validation_and_helpers() -> None:
    spec = tiny_flow_spec()
    assert spec.input_shapes(16, 24) == {"image0": (1, 3, 16, 24), "image1": (1, 3, 16, 24)}
    assert spec.dynamic_axes()["flow"] == {2: "height", 3: "width"}
    a, b = spec.make_inputs(16, 24, seed=3), spec.make_inputs(16, 24, seed=3)
    assert all(np.array_equal(a[k], b[k]) and a[k].dtype == np.float32 for k in a)
    assert spec.tolerance("fp16") == spec.fp16_tolerance
    image = (TensorSpec("image", (1, 3, "height", "width")),)
    with pytest.raises(ValueError, match="build_module or onnx_path"):
        ModelSpec("m", image, (TensorSpec("depth", (1,)),))
    with pytest.raises(ValueError, match="unique"):
        ModelSpec("m", image, image, build_module=lambda: torch.nn.Identity())
    with pytest.raises(ValueError, match="model name"):
        tiny_depth_spec(name="bad name!")


def test_custom_input_generator_is_used() -> None:
    spec = tiny_depth_spec(input_generator=lambda shapes, rng: {"image": np.ones(shapes["image"], np.float32)})
    assert spec.make_inputs(8, 8)["image"].sum() == 3 * 64


@pytest.mark.parametrize("field, value, message", [
    ("backend", "tensorflow", "backend"), ("precision", "fp8", "precision"), ("device", "gpu", "device"),
    ("num_threads", -1, "num_threads"), ("workspace_mib", 0, "workspace_mib"),
])
def test_engine_config_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EngineConfig(**{field: value})


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_engine_cache_dir() == tmp_path / "geovis_ros" / "engines"
    assert EngineConfig().engine_cache_dir == tmp_path / "geovis_ros" / "engines"


def test_check_inputs_binds_symbols_and_names_problems() -> None:
    specs = tiny_flow_spec().inputs
    image = np.zeros((1, 3, 16, 24), np.float32)
    assert check_inputs({"image0": image, "image1": torch.zeros(1, 3, 16, 24)}, specs) == {"height": 16, "width": 24}
    with pytest.raises(InputError, match=r"missing \['image1'\], unexpected \['img'\]"):
        check_inputs({"image0": image, "img": image}, specs)
    with pytest.raises(InputError, match="dtype float64, expected float32"):
        check_inputs({"image0": image.astype(np.float64), "image1": image}, specs)
    with pytest.raises(InputError, match="rank 4"):
        check_inputs({"image0": image[0], "image1": image}, specs)
    with pytest.raises(InputError, match=r"axis 1"):
        check_inputs({"image0": np.zeros((1, 4, 16, 24), np.float32), "image1": image}, specs)
    with pytest.raises(InputError, match="'height' is 8 here but 16"):
        check_inputs({"image0": image, "image1": np.zeros((1, 3, 8, 24), np.float32)}, specs)
    with pytest.raises(InputError, match="numpy array or torch tensor"):
        check_inputs({"image0": image.tolist(), "image1": image}, specs)


def test_relative_error_is_normwise_and_flags_nan_and_shape() -> None:
    expected = np.array([0.0, 1e-9, 2.0])
    assert relative_error(expected + 1e-6, expected) == pytest.approx(5e-7)
    assert relative_error(np.array([np.nan, 0, 2.0]), expected) == float("inf")
    assert relative_error(np.zeros(2), expected) == float("inf")


def test_registry_missing_gives_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_import(name: str) -> types.ModuleType:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(engine_module.importlib, "import_module", fake_import)
    specs, note = registered_model_specs()
    assert specs == () and "does not exist" in note


def test_registry_lists_specs_and_rejects_other_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = types.ModuleType(engine_module.REGISTRY_MODULE)
    registry.MODEL_SPECS = (tiny_depth_spec(),)
    monkeypatch.setitem(sys.modules, engine_module.REGISTRY_MODULE, registry)
    specs, note = registered_model_specs()
    assert [s.name for s in specs] == ["tiny_depth"] and note is None
    registry.MODEL_SPECS = ("not a spec",)
    with pytest.raises(TypeError, match="ModelSpec"):
        registered_model_specs()
