import warnings

import cv2
import numpy as np
import pytest
import torch

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import se3_exp
from geovis_ros.inference.engine import ModelSpec
from geovis_ros.inference.registry import (
    MODEL_INFO,
    MODEL_SPECS,
    RegistryError,
    build_model,
    get_spec,
)
from geovis_ros.models.blocks import ModelInputError, backward_warp, local_correlation, normalize_image
from geovis_ros.models.depth import CANONICAL_FX, DepthNet, canonical_depth_target, run_depth, scale_depth_to_camera
from geovis_ros.models.flow import (
    FlowRefineNet,
    dis_flow,
    dis_object,
    forward_backward_consistency,
    initial_flow,
    pad_to_multiple,
    predict_flow,
)
from geovis_ros.models.pose import PoseNet, predict_pose, twist_to_matrix

H, W = 48, 64


@pytest.fixture(autouse=True)
def _quiet_missing_weights():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no shipped weights", category=RuntimeWarning)
        yield


def test_depth_net_shapes_and_dtypes():
    net = DepthNet().eval()
    depth, log_var = net(torch.randn(2, 3, H, W))
    assert depth.shape == (2, 1, H, W) and log_var.shape == (2, 1, H, W)
    assert depth.dtype == torch.float32 and log_var.dtype == torch.float32
    assert bool((depth > 0).all())
    scales = net.forward_multiscale(torch.randn(1, 3, H, W))
    assert [s[0].shape[-1] for s in scales] == [W // 8, W // 4, W // 2, W]


def test_flow_net_shapes():
    net = FlowRefineNet().eval()
    init = torch.randn(2, 2, H, W) * 3
    flow = net(torch.randn(2, 3, H, W), torch.randn(2, 3, H, W), init)
    assert flow.shape == (2, 2, H, W) and flow.dtype == torch.float32
    assert bool(torch.isfinite(flow).all())


def test_flow_level_estimator_moves_towards_the_best_match():
    estimator = FlowRefineNet().estimators[0].eval()  # radius 4: 81 displacements, row-major (dy, dx)
    cost = torch.full((1, 81, 6, 8), -50.0)
    cost[:, 3 * 9 + 6] = 50.0  # best match at dy = 3 - 4 = -1, dx = 6 - 4 = +2
    correction = estimator(cost, torch.zeros(1, 48, 6, 8), torch.zeros(1, 2, 6, 8))
    gate = torch.sigmoid(estimator.out.bias[0])  # untrained: zero weights, residual zero
    torch.testing.assert_close(correction[:, 0], torch.full((1, 6, 8), 2.0) * gate)
    torch.testing.assert_close(correction[:, 1], torch.full((1, 6, 8), -1.0) * gate)


def test_pose_net_shape_and_dtype():
    pose = PoseNet().eval()(torch.randn(3, 3, H, W), torch.randn(3, 3, H, W))
    assert pose.shape == (3, 6) and pose.dtype == torch.float32


@pytest.mark.parametrize(
    "call",
    [
        lambda: DepthNet()(torch.randn(1, 3, 50, 64)),
        lambda: DepthNet()(torch.randn(1, 1, H, W)),
        lambda: FlowRefineNet()(torch.randn(1, 3, H, W), torch.randn(1, 3, H, W), torch.randn(1, 2, H, 32)),
        lambda: PoseNet()(torch.randn(1, 3, H, W), torch.randn(1, 3, H, 32)),
        lambda: normalize_image(np.zeros((H, W), np.uint8)),
        lambda: dis_flow(np.zeros((H, W, 3), np.uint8), np.zeros((H, W, 3), np.uint8), seed_downscale=0),
        lambda: dis_flow(np.zeros((H, W, 3), np.uint8), np.zeros((H, W, 3), np.uint8), preset="slow"),
        lambda: dis_flow(np.zeros((H, W, 3), np.uint8), np.zeros((H, 32, 3), np.uint8)),
        lambda: dis_flow(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10, 3), np.uint8)),  # too small for DIS
    ],
)
def test_bad_inputs_raise_clear_error(call):
    with pytest.raises(ModelInputError):
        call()


def test_scale_depth_follows_focal_length():
    canonical = np.full((4, 4), 2.0, np.float32)
    np.testing.assert_allclose(scale_depth_to_camera(canonical, CANONICAL_FX), 2.0)
    np.testing.assert_allclose(scale_depth_to_camera(canonical, 2 * CANONICAL_FX), 4.0)
    with pytest.raises(ModelInputError):
        scale_depth_to_camera(canonical, 0.0)
    metric = torch.full((1, 1, 2, 2), 6.0)
    target = canonical_depth_target(metric, torch.tensor([3 * CANONICAL_FX]))
    torch.testing.assert_close(scale_depth_to_camera(target, 3 * CANONICAL_FX), metric)


def _constant_depth_infer(value: float):
    def infer(inputs):
        image = inputs["image"]
        shape = (1, 1, *image.shape[2:])
        return {"depth": np.full(shape, value, np.float32), "log_var": np.zeros(shape, np.float32)}

    return infer


def test_run_depth_keeps_metric_scale_across_resizes():
    rgb = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    k = Intrinsics(150.0, 150.0, 63.5, 47.5, 128, 96)
    infer = _constant_depth_infer(3.0)
    # Network input 64x48: fx halves to 75 px, so canonical 3 m maps to 3 * 75 / 100 m.
    depth, log_var = run_depth(infer, rgb, k, (64, 48))
    assert depth.shape == (96, 128) and depth.dtype == np.float32 and log_var.shape == (96, 128)
    np.testing.assert_allclose(depth, 3.0 * 75.0 / CANONICAL_FX, rtol=1e-5)
    # The same camera resized to 64x48 before prediction gives the same metric depth.
    small = rgb[::2, ::2].copy()
    depth_small, _ = run_depth(infer, small, k.resized(64, 48), (64, 48))
    np.testing.assert_allclose(depth_small, depth[::2, ::2], rtol=1e-5)
    with pytest.raises(ModelInputError):
        run_depth(infer, rgb, k.resized(64, 48), (64, 48))
    with pytest.raises(ModelInputError):
        run_depth(infer, rgb, k, (60, 48))


def test_registry_specs_build_and_match_their_tensors():
    assert {s.name for s in MODEL_SPECS} == {"depth", "flow", "pose"} == set(MODEL_INFO)
    for spec in MODEL_SPECS:
        assert isinstance(spec, ModelSpec)
        inputs = spec.make_inputs(H, W, seed=1)
        np.testing.assert_array_equal(inputs[spec.inputs[0].name], spec.make_inputs(H, W, seed=1)[spec.inputs[0].name])
        module = spec.build_module()
        assert not module.training
        with torch.no_grad():
            outputs = module(*(torch.from_numpy(inputs[t.name]) for t in spec.inputs))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        bound = {"batch": 1, "height": H, "width": W}
        for tensor, out_spec in zip(outputs, spec.outputs, strict=True):
            assert tuple(tensor.shape) == out_spec.shape_with(bound)
            assert str(tensor.dtype).removeprefix("torch.") == out_spec.dtype
    with pytest.raises(RegistryError):
        get_spec("segmentation")
    with pytest.raises(RegistryError):
        build_model("segmentation")


def test_local_correlation_peaks_at_the_true_shift():
    feat = torch.randn(1, 8, 12, 16)
    shifted = torch.roll(feat, shifts=(1, -2), dims=(2, 3))  # feat2(p + (dx=-2, dy=1)) == feat1(p)
    cost = local_correlation(feat, shifted, radius=2)
    assert cost.shape == (1, 25, 12, 16)
    best = cost[0, :, 4:8, 4:12].mean(dim=(1, 2)).argmax().item()
    dy, dx = divmod(best, 5)
    assert (dy - 2, dx - 2) == (1, -2)


def test_backward_warp_integer_shift():
    image = torch.arange(2 * 6 * 8, dtype=torch.float32).view(1, 2, 6, 8)
    flow = torch.zeros(1, 2, 6, 8)
    flow[:, 0] = 1.0
    warped = backward_warp(image, flow)
    torch.testing.assert_close(warped[..., :-1], image[..., 1:])
    assert bool((warped[..., -1] == 0).all())  # sampled outside: zero padding


def test_forward_backward_consistency():
    fw = torch.zeros(1, 2, 10, 12)
    fw[:, 0] = 2.0
    good = forward_backward_consistency(fw, -fw)
    assert bool(good[..., :, :10].all()) and not bool(good[..., :, 10:].any())  # leaves the image
    bad = forward_backward_consistency(fw, fw)
    assert not bool(bad.any())


def test_twist_to_matrix_matches_se3_exp():
    rng = np.random.default_rng(3)
    twists = np.concatenate([rng.normal(size=(4, 6)) * 0.3, np.zeros((1, 6)), [[0.1, 0, 0, 1e-6, 0, 0]]])
    poses = twist_to_matrix(torch.from_numpy(twists)).numpy()
    for xi, pose in zip(twists, poses, strict=True):
        np.testing.assert_allclose(pose, se3_exp(xi), atol=1e-9)


def test_torch_predict_helpers_any_size():
    rng = np.random.default_rng(1)
    rgb1 = (rng.random((37, 51, 3)) * 255).astype(np.uint8)
    rgb2 = np.roll(rgb1, 1, axis=1)
    flow = predict_flow(FlowRefineNet().eval(), rgb1, rgb2)
    assert flow.shape == (37, 51, 2) and flow.dtype == np.float32
    pose = predict_pose(PoseNet().eval(), rgb1, rgb2, (64, 48))
    np.testing.assert_allclose(pose, np.eye(4), atol=1e-6)  # zero-initialised head: identity motion
    padded = pad_to_multiple(rgb1, 16)
    assert padded.shape == (48, 64, 3)
    np.testing.assert_array_equal(padded[37:, :51], np.broadcast_to(rgb1[-1:], (11, 51, 3)))


def test_seeded_dis_reaches_motions_that_plain_dis_loses():
    """A 40 px shift at 320x240 is beyond plain DIS's 1/8 pyramid; the 1/4-size seed brings it within reach."""
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (240, 400, 3), dtype=np.uint8), (0, 0), 2.0)
    shift = 40
    first, second = texture[:, shift:shift + 320], texture[:, :320]  # scene moves right by `shift` px
    inner = (slice(20, -20), slice(80, -20))  # pixels whose match stays inside the second image
    plain_error = np.abs(dis_flow(first, second)[inner][..., 0] - shift).mean()
    seeded = initial_flow(first, second)
    assert np.abs(seeded[inner][..., 0] - shift).mean() < 0.5 < plain_error
    assert np.abs(seeded[inner][..., 1]).mean() < 0.5


def test_dis_objects_are_reused_per_thread_preset_and_size():
    """One DIS object per (thread, preset, image size): reused frame after frame, never shared or resized."""
    import threading

    first = dis_object("medium", 240, 320)
    assert dis_object("medium", 240, 320) is first
    assert dis_object("fast", 240, 320) is not first and dis_object("medium", 48, 64) is not first
    other: list[object] = []
    worker = threading.Thread(target=lambda: other.append(dis_object("medium", 240, 320)))
    worker.start()
    worker.join()
    assert other[0] is not first
    rng = np.random.default_rng(1)
    a = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (0, 0), 1.5)
    b = np.roll(a, 2, axis=1)
    np.testing.assert_array_equal(initial_flow(a, b), initial_flow(a, b))  # reuse keeps no state between calls
    assert dis_object("medium", 240, 320, seeded=True) is not first  # the seeded pass has its own object
    c = np.roll(a, 5, axis=0)
    before = initial_flow(a, b)
    initial_flow(b, c)  # whatever ran before (here a seeded pass on other images) changes nothing
    np.testing.assert_array_equal(initial_flow(a, b), before)
