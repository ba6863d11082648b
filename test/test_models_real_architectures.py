"""The field's architectures (random weights, tiny configs, exported as upstream does) through
``geovis models``, ``geovis predict`` and the Pipeline built from node parameters only.

Depth Anything V2 (transformers) is a static-shape export: its card is a file beside the ONNX that
starts from the preset and fixes the size; the RAFT-like network uses the ``raft`` preset as is.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from real_architectures import DA_SIZE, export, export_depth_anything, export_raft

from geovis_ros.cli import main
from geovis_ros.data.image_io import read_flo
from geovis_ros.frame import Frame
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.models.cards import CardError
from geovis_ros.pipeline.pipeline import Pipeline, pipeline_config_from_parameters

pytest.importorskip("transformers")

W, H = 64, 48
K = Intrinsics(50.0, 50.0, 31.5, 23.5, W, H)
CPU = {"backend": "onnxruntime", "device": "cpu"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    directory = tmp_path_factory.mktemp("zoo")
    da_path, da_module = export_depth_anything(directory)
    da_path.with_suffix(".yaml").write_text(
        f"base: depth_anything_v2\nsize: {{fixed: [{DA_SIZE[0]}, {DA_SIZE[1]}]}}\n")
    raft_path, raft_module = export_raft(directory)
    return {"da": da_path, "da_module": da_module, "raft": raft_path, "raft_module": raft_module, "dir": directory}


def _image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 6, width // 6, 3)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def test_models_lists_presets_and_checks_cards_against_onnx(models, capsys):
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    for preset in ("depth_anything_v2", "depth_anything_v2_metric_indoor", "depth_anything_v2_metric_outdoor",
                   "metric3d_v2", "midas_dpt", "raft", "sea_raft", "neuflow_v2", "geovis_depth", "geovis_flow"):
        assert preset in listing
    assert main(["models", "check", str(models["raft"]), "--card", "raft", "--run"]) == 0
    out = capsys.readouterr().out
    assert "flow        -> 'flow_2' float32" in out and "finite and plausible" in out
    assert main(["models", "check", str(models["da"]), "--run"]) == 0  # the card beside the ONNX
    assert "depth       -> 'predicted_depth' float32 (1, 70, 98)" in capsys.readouterr().out
    assert main(["models", "check", str(models["da"]), "--card", "depth_anything_v2"]) == 2
    err = capsys.readouterr().err
    assert "size.fixed" in err and "70x98" in err and err.count("\n") == 1
    assert main(["models", "check", str(models["raft"]), "--card", "midas_dpt"]) == 2
    assert "inputs: the model's input(s) ['image2'] have no role in the card" in capsys.readouterr().err


def test_predict_depth_with_depth_anything_gives_relative_depth(models, tmp_path, capsys):
    rgb = _image(140, 196)  # the export's aspect: resized to exactly 70x98, no padding
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), rgb[..., ::-1])
    out = tmp_path / "d.npy"
    assert main(["predict", "depth", str(image), "--model", str(models["da"]), "--out", str(out)]) == 0
    assert "(relative)" in capsys.readouterr().out
    depth = np.load(out)
    assert depth.shape == (140, 196) and np.isfinite(depth).mean() > 0.99
    assert np.nanmedian(depth) == pytest.approx(1.0, rel=1e-3)
    # Independently: the module on the upstream preprocessing (RGB / 255, ImageNet mean/std), resized back.
    small = cv2.resize(rgb, (DA_SIZE[1], DA_SIZE[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    x = (small - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    with torch.no_grad():
        inverse = models["da_module"](torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))[0].numpy()
    inverse = cv2.resize(inverse, (196, 140), interpolation=cv2.INTER_LINEAR)
    assert np.corrcoef(1.0 / depth.ravel(), inverse.ravel())[0, 1] > 0.999
    assert main(["predict", "depth", str(image), "--model", str(models["da"]), "--out", str(out),
                 "--png", str(tmp_path / "d.png")]) == 2  # millimetres need a metric model
    assert "relative depth" in capsys.readouterr().err


@pytest.mark.parametrize("height, width", [(48, 64), (45, 61)])
def test_predict_flow_with_raft_takes_the_last_prediction(models, tmp_path, height, width):
    first = _image(height, width, 1)
    second = np.roll(first, 2, axis=1)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for path, rgb in zip(paths, (first, second), strict=True):
        cv2.imwrite(str(path), rgb[..., ::-1])
    out = tmp_path / "f.flo"
    assert main(["predict", "flow", *map(str, paths), "--model", str(models["raft"]), "--card", "raft",
                 "--out", str(out)]) == 0
    flow = read_flo(out)
    assert flow.shape == (height, width, 2) and np.isfinite(flow).all()
    if (height, width) == (48, 64):  # a multiple of 8 and of the 32 px bucket: no resize, no padding
        with torch.no_grad():
            as_tensor = [torch.from_numpy(rgb.transpose(2, 0, 1)[None].astype(np.float32)) for rgb in (first, second)]
            expected = models["raft_module"](*as_tensor)[-1][0].numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(flow, expected, atol=1e-4)


def test_pipeline_from_parameters_runs_both_networks(models):
    params = {**CPU, "model_depth": str(models["da"]), "model_flow": str(models["raft"]), "model_flow_card": "raft",
              "input_width": 64}
    pipeline = Pipeline(pipeline_config_from_parameters(params, ("depth", "flow")))
    results = [pipeline(Frame(i * 10**8, np.roll(_image(H, W, 2), 2 * i, axis=1), K)) for i in range(2)]
    depth = results[1].depth
    assert depth is not None and not depth.is_metric and depth.depth.shape == (H, W)
    assert np.isfinite(depth.depth).mean() > 0.99 and np.nanmin(depth.depth) > 0
    assert results[0].flow is None and results[1].flow.flow.shape == (H, W, 2)
    described = pipeline.describe()
    assert described["depth_card"].endswith("depth_anything_v2.yaml") and described["flow_card"] == "raft"
    assert described["depth_backend"] == "onnxruntime" and described["depth_engines"] == "98x70"


def test_tensorrt_11_fp16_conversion_of_the_real_graphs(models):
    """The strongly typed fp16 input: valid ONNX, fp32 IO, fp16 weights; RAFT-like runs close to fp32.

    (ONNX Runtime's CPU Resize has no fp16 bicubic kernel for Depth Anything's position-embedding
    interpolation, so that graph is checked for validity only; TensorRT runs it on the GPU.)
    """
    import onnx

    from geovis_ros.inference.card_runtime import bind_model
    from geovis_ros.inference.engine import relative_error
    from geovis_ros.inference.onnxruntime_backend import OnnxRuntimeEngine
    from geovis_ros.inference.tensorrt_backend import fp16_onnx
    from geovis_ros.models.cards import load_card

    for path in (models["da"], models["raft"]):
        converted = fp16_onnx(path.read_bytes())
        assert fp16_onnx(path.read_bytes()) == converted  # deterministic: a stable cache key
        model = onnx.load_from_string(converted)
        onnx.checker.check_model(model, full_check=True)
        assert {v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)} == {
            onnx.TensorProto.FLOAT}
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    bound = bind_model(load_card("raft"), str(models["raft"]))
    inputs = bound.spec.make_inputs(48, 64)
    expected = OnnxRuntimeEngine(bound.spec, models["raft"].read_bytes(), 48, 64).infer(inputs)
    actual = OnnxRuntimeEngine(bound.spec, fp16_onnx(models["raft"].read_bytes()), 48, 64).infer(inputs)
    assert relative_error(actual["flow_2"], expected["flow_2"]) < 2e-2


def test_mismatches_are_refused_at_start_with_one_line_naming_the_field(models, tmp_path):
    def start(**params):
        with pytest.raises(CardError) as caught:
            Pipeline(pipeline_config_from_parameters({**CPU, **params}, ("depth", "flow")))
        message = str(caught.value)
        assert "\n" not in message
        return message

    bad = tmp_path / "bad.yaml"
    bad.write_text("base: depth_anything_v2\ninputs:\n  - {index: 0, role: image, mean: [0.4, 0.4]}\n")
    assert "inputs[0].mean: expected a list of 3 numbers" in start(model_depth=str(models["da"]),
                                                                   model_depth_card=str(bad))
    named = tmp_path / "named.yaml"
    named.write_text("base: depth_anything_v2\nsize: {fixed: [70, 98]}\n"
                     "inputs:\n  - {name: image, role: image}\n")
    assert "inputs[0]: the model has no input 'image'" in start(model_depth=str(models["da"]),
                                                                 model_depth_card=str(named))
    assert "task: is 'depth'" in start(model_flow=str(models["raft"]), model_flow_card="midas_dpt")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    assert "model_flow: cannot read ONNX file" in start(model_flow=str(garbage), model_flow_card="raft")
    module = models["raft_module"]
    with torch.no_grad():
        module.update[-1].weight.fill_(float("nan"))
    example = {name: torch.rand(1, 3, 48, 64) * 255 for name in ("image1", "image2")}
    broken = export(module, tmp_path / "nan.onnx", example, ["flow_0", "flow_1", "flow_2"],
                    {name: {2: "height", 3: "width"} for name in ("image1", "image2", "flow_0", "flow_1", "flow_2")})
    assert "on a golden input is 100% NaN" in start(model_flow=str(broken), model_flow_card="raft")
