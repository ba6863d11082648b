"""Card-driven pre/post-processing (one implementation for every model), the golden-input check,
and the per-size engine LRU with its size buckets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_inference_nets import tiny_depth_spec

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.inference.card_runtime import (
    BoundModel,
    check_golden_outputs,
    depth_from_outputs,
    flow_from_outputs,
    image_input,
    network_intrinsics,
    plan_input,
    snap_width,
)
from geovis_ros.inference.engine import EngineConfig, ModelSpec, TensorSpec
from geovis_ros.inference.preprocess import ResizePad
from geovis_ros.models.cards import CardError, SizeCard, load_card, parse_card
from geovis_ros.pipeline.networks import NetworkConfig, _EngineStage

K = Intrinsics(400.0, 400.0, 319.5, 239.5, 640, 480)
SPEC = ModelSpec("depth", (TensorSpec("x", (1, 3, "height", "width")),), (TensorSpec("y", (1, 1, "height", "width")),),
                 onnx_path=__file__)  # only the names matter to the post-processing


def _bound(card, names):
    return BoundModel(card, SPEC, names)


def _depth_card(kind, **extra):
    return parse_card({"name": "d", "task": "depth", "licence": "x", "inputs": [{"index": 0, "role": "image"}],
                       "outputs": {"depth": {"name": "y", "kind": kind, **extra}}}, "d")


@pytest.mark.parametrize("size, source, target, resized, padded", [
    (SizeCard(multiple=14, resize="keep_aspect"), (480, 640), 518, (392, 532), (392, 532)),  # 518 -> 532 bucket
    (SizeCard(multiple=8, resize="pad"), (45, 61), 61, (47, 64), (48, 64)),  # 61 -> the 64 bucket
    (SizeCard(multiple=14, resize="pad", fixed=(616, 1064)), (480, 640), 999, (616, 821), (616, 1064)),
    (SizeCard(multiple=16, resize="stretch", fixed=(432, 768)), (480, 640), 999, (432, 768), (432, 768)),
    (SizeCard(multiple=16, resize="keep_aspect", area=(192, 144)), (480, 640), 999, (144, 192), (144, 192)),
])
def test_plan_follows_the_size_rules(size, source, target, resized, padded):
    plan = plan_input(size, *source, target)
    assert (plan.source, plan.resized, plan.padded) == (source, resized, padded)
    assert padded[0] % size.multiple == 0 and padded[1] % size.multiple == 0


def test_widths_snap_to_a_few_buckets():
    assert {snap_width(w, 8) for w in range(300, 340)} == {288, 320, 352}
    assert {snap_width(w, 14) for w in range(500, 540)} == {504, 532}
    assert snap_width(3, 16) == 32


def test_image_input_normalises_as_the_card_says():
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 10
    metric3d = load_card("metric3d_v2").inputs[0]  # mean/std in 0-255 units
    plan = ResizePad((6, 8), (6, 8), (14, 14))
    x = image_input(metric3d, rgb, plan, pad="mean")
    assert x.shape == (1, 3, 14, 14) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [(200 - 123.675) / 58.395, (0 - 116.28) / 57.12, (10 - 103.53) / 57.375],
                               rtol=1e-5)
    assert np.all(x[:, :, 6:, :] == 0) and np.all(x[:, :, :, 8:] == 0)  # padded with the mean colour
    neuflow = load_card("neuflow_v2").inputs[0]  # BGR, raw 0-255
    y = image_input(neuflow, rgb, ResizePad((6, 8), (6, 8), (6, 8)))
    np.testing.assert_allclose(y[0, :, 0, 0], [10, 0, 200])
    da = dataclasses.replace(load_card("depth_anything_v2").inputs[0], layout="NHWC")
    z = image_input(da, rgb, ResizePad((6, 8), (3, 4), (4, 4)))
    assert z.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(z[0, 3], z[0, 2])  # edge padding
    np.testing.assert_allclose(z[0, 0, 0], (np.array([200, 0, 10]) / 255 - [0.485, 0.456, 0.406])
                               / np.array([0.229, 0.224, 0.225]), rtol=1e-5)


def test_network_intrinsics_scale_with_the_resize_and_ignore_padding():
    k = network_intrinsics(K, ResizePad((480, 640), (240, 320), (256, 320)))
    assert (k.fx, k.cx, k.width, k.height) == (200.0, 159.5, 320, 256)  # pixel-centre convention


def test_depth_kinds_become_metres_or_relative_depth():
    plan = ResizePad((480, 640), (240, 320), (240, 320))
    ones = np.ones((1, 1, 240, 320), np.float32)
    depth, std, metric = depth_from_outputs(_bound(load_card("metric3d_v2"), {"depth": "y"}), {"y": 2 * ones},
                                            plan, K)
    # canonical focal 1000 px; the network saw fx = 200 px: 2 m canonical -> 0.4 m
    assert metric and depth.shape == (480, 640) and np.allclose(depth, 0.4) and np.allclose(std, 0.04)
    card = _depth_card("metric_depth", max_depth=20.0)
    depth, _, _ = depth_from_outputs(_bound(card, {"depth": "y"}), {"y": np.where(ones > 0, 25.0, 0)[0]}, plan, K)
    assert np.isnan(depth).all()  # beyond max_depth
    depth, _, metric = depth_from_outputs(_bound(_depth_card("disparity", baseline_m=0.1), {"depth": "y"}),
                                          {"y": 4 * ones}, plan, K)
    assert metric and np.allclose(depth, 200.0 * 0.1 / 4)
    inverse = np.linspace(0.5, 2.0, 240 * 320, dtype=np.float32).reshape(1, 240, 320)
    inverse[0, 0, 0] = -1.0
    depth, std, metric = depth_from_outputs(_bound(_depth_card("relative_inverse_depth"), {"depth": "y"}),
                                            {"y": inverse}, ResizePad((240, 320), (240, 320), (240, 320)),
                                            K.resized(320, 240))
    assert not metric and np.isnan(depth[0, 0]) and np.nanmedian(depth) == pytest.approx(1.0, rel=1e-3)
    np.testing.assert_allclose(1 / depth[1:], inverse[0, 1:] / np.median(inverse[inverse > 0]), rtol=1e-5)
    np.testing.assert_allclose(std, 0.1 * depth, rtol=1e-6)
    depth, _, metric = depth_from_outputs(_bound(_depth_card("relative_depth"), {"depth": "y"}), {"y": 3 * ones},
                                          plan, K)
    assert not metric and np.allclose(depth, 1.0)


def test_shipped_uncertainty_is_a_log_variance_of_log_depth():
    plan = ResizePad((48, 64), (48, 64), (48, 64))
    k = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)  # fx = canonical: no scaling
    depth, std, metric = depth_from_outputs(
        _bound(load_card("geovis_depth"), {"depth": "depth", "uncertainty": "log_var"}),
        {"depth": np.full((1, 1, 48, 64), 3.0, np.float32), "log_var": np.full((1, 1, 48, 64), np.log(0.01))},
        plan, k)
    assert metric and np.allclose(depth, 3.0) and np.allclose(std, 0.3)


def test_flow_is_cropped_resized_and_rescaled_to_source_pixels():
    plan = ResizePad((45, 61), (23, 32), (24, 32))
    flow = np.zeros((1, 2, 24, 32), np.float32)
    flow[:, 0], flow[:, 1] = 2.0, 1.0
    flow[:, :, 23] = 99.0  # the padded row is cropped away
    out = flow_from_outputs(_bound(load_card("raft"), {"flow": "f"}), {"f": flow}, plan)
    assert out.shape == (45, 61, 2)
    np.testing.assert_allclose(out[..., 0], 2.0 * 61 / 32, rtol=1e-5)
    np.testing.assert_allclose(out[..., 1], 1.0 * 45 / 23, rtol=1e-5)
    with pytest.raises(CardError, match="outputs.flow"):
        flow_from_outputs(_bound(load_card("raft"), {"flow": "f"}), {"f": flow[:, :, :12]}, plan)


def test_golden_check_refuses_nan_non_positive_and_exploding_outputs():
    depth = _bound(load_card("depth_anything_v2"), {"depth": "y"})
    check_golden_outputs(depth, {"y": np.random.default_rng(0).uniform(0.1, 2, (1, 14, 14))}, "ok")
    with pytest.raises(CardError, match="'y' \\(depth\\) on a golden input is 100% NaN"):
        check_golden_outputs(depth, {"y": np.full((1, 14, 14), np.nan)}, "model m")
    with pytest.raises(CardError, match="not positive anywhere"):
        check_golden_outputs(depth, {"y": np.zeros((1, 14, 14))}, "model m")
    flow = _bound(load_card("raft"), {"flow": "f"})
    with pytest.raises(CardError, match="reaches 1e\\+06 px"):
        check_golden_outputs(flow, {"f": np.full((1, 2, 8, 8), 1e6)}, "model m")


def test_engines_are_kept_per_size_in_a_bounded_lru():
    config = NetworkConfig(engine=EngineConfig(backend="onnxruntime", device="cpu"), max_engines=2)
    stage = _EngineStage(tiny_depth_spec(), config)
    first = stage.engine(32, 24)
    stage.engine(64, 48)
    assert stage.engine(32, 24) is first  # reused, and now the most recent
    stage.engine(96, 72)
    described = stage.describe()
    assert described["tiny_depth_engines"] == "32x24,96x72"  # (64, 48) was the least recently used
    assert described["tiny_depth_backend"] == "onnxruntime"
    tight = _EngineStage(tiny_depth_spec(), dataclasses.replace(config, max_engines=8, max_engine_mib=1))
    tight.engine(32, 24)
    tight.engine(320, 240)  # ~1 MiB estimate on its own: the older engine goes
    assert tight.describe()["tiny_depth_engines"] == "320x240"
