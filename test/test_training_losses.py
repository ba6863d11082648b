import math

import pytest
import torch

from geovis_ros.training import losses

B, H, W = 2, 12, 16


def _mask(value: bool = True) -> torch.Tensor:
    return torch.full((B, 1, H, W), value, dtype=torch.bool)


def test_masked_mean_ignores_invalid_and_handles_empty():
    values = torch.arange(4.0).view(1, 1, 2, 2)
    mask = torch.tensor([[[[True, False], [False, True]]]])
    assert losses.masked_mean(values, mask).item() == pytest.approx(1.5)
    assert losses.masked_mean(values, torch.zeros_like(mask)).item() == 0.0


def test_silog_zero_for_identical_and_known_for_scale():
    depth = torch.rand(B, 1, H, W) * 5 + 0.5
    assert losses.silog_loss(depth, depth, _mask()).item() == pytest.approx(0.0, abs=1e-7)
    # A global factor s gives g = ln s everywhere: mean(g^2) - lam mean(g)^2 = (1 - lam) ln(s)^2.
    value = losses.silog_loss(2.0 * depth, depth, _mask(), lam=0.85).item()
    assert value == pytest.approx(0.15 * math.log(2.0) ** 2, rel=1e-4)
    assert losses.silog_loss(2.0 * depth, depth, _mask(), lam=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_berhu_known_values():
    target = torch.zeros(1, 1, 1, 4)
    pred = torch.tensor([[[[0.1, 0.2, 1.0, 0.0]]]])
    mask = torch.ones_like(pred, dtype=torch.bool)
    c = 0.2 * 1.0
    expected = (0.1 + 0.2 + (1.0 + c * c) / (2 * c) + 0.0) / 4
    assert losses.berhu_loss(pred, target, mask).item() == pytest.approx(expected, rel=1e-5)
    assert losses.berhu_loss(target, target, mask).item() == 0.0


def test_gaussian_and_laplacian_nll_known_values():
    mean = torch.zeros(1, 1, 1, 1)
    target = torch.full((1, 1, 1, 1), 2.0)
    mask = torch.ones_like(mean, dtype=torch.bool)
    log_var = torch.full_like(mean, math.log(4.0))
    assert losses.gaussian_nll(mean, target, log_var, mask).item() == pytest.approx(0.5 * (math.log(4.0) + 1.0))
    log_b = torch.full_like(mean, math.log(2.0))
    assert losses.laplacian_nll(mean, target, log_b, mask).item() == pytest.approx(math.log(2.0) + 1.0)
    # The NLL is minimised by the true variance of the error.
    grid = torch.linspace(-3, 3, 61).view(1, 1, 1, -1)
    nll = [losses.gaussian_nll(mean, target, torch.full_like(mean, v), mask).item() for v in grid.flatten()]
    assert grid.flatten()[int(torch.tensor(nll).argmin())].item() == pytest.approx(math.log(4.0), abs=0.06)


def test_endpoint_error_and_multiscale():
    gt = torch.zeros(B, 2, H, W)
    flow = gt.clone()
    flow[:, 0] = 3.0
    flow[:, 1] = 4.0
    assert losses.endpoint_error(flow, gt, _mask()).item() == pytest.approx(5.0)
    assert losses.endpoint_error(gt, gt, _mask()).item() == 0.0
    coarse = torch.zeros(B, 2, H // 4, W // 4)
    coarse[:, 0] = 1.0  # 1 px at 1/4 resolution = 4 px at full resolution
    total = losses.multiscale_epe([coarse, flow], gt, _mask(), [0.5, 1.0])
    assert total.item() == pytest.approx(0.5 * 4.0 + 5.0, rel=1e-5)
    with pytest.raises(ValueError):
        losses.multiscale_epe([flow], gt, _mask(), [1.0, 2.0])


def test_photometric_terms_zero_for_identical_images():
    image = torch.rand(B, 3, H, W)
    assert losses.ssim_dissimilarity(image, image).abs().max().item() < 1e-4
    assert losses.photometric_error(image, image).abs().max().item() < 1e-4
    assert losses.photometric_error(image, 1 - image).mean().item() > 0.1


def test_inverse_warp_identity_and_known_shift():
    image = torch.rand(1, 3, H, W)
    depth = torch.full((1, 1, H, W), 2.0)
    k = torch.tensor([[[20.0, 0.0, 7.5], [0.0, 20.0, 5.5], [0.0, 0.0, 1.0]]])
    warped, valid = losses.inverse_warp(image, depth, k, torch.eye(4).unsqueeze(0))
    torch.testing.assert_close(warped, image, atol=1e-5, rtol=0)
    assert bool(valid.all())
    # Source camera 0.2 m to the right: a target point at depth 2 m appears 20 * 0.2 / 2 = 2 px further left.
    pose = torch.eye(4).unsqueeze(0)
    pose[0, 0, 3] = -0.2
    warped, valid = losses.inverse_warp(image, depth, k, pose)
    torch.testing.assert_close(warped[..., 2:], image[..., :-2], atol=1e-5, rtol=0)
    assert not bool(valid[..., :2].any()) and bool(valid[..., 2:].all())
    flow = losses.rigid_flow_from_depth(depth, k, pose)
    torch.testing.assert_close(flow[:, 0], torch.full((1, H, W), -2.0))


def test_min_reprojection_and_automask():
    target = torch.rand(1, 3, H, W)
    good, bad = target.clone(), torch.rand(1, 3, H, W)
    loss, mask = losses.min_reprojection_loss(target, [good, bad], [bad, bad])
    assert loss.item() == pytest.approx(0.0, abs=1e-4) and bool(mask.all())
    # A static scene (sources identical to the target) is masked out entirely by auto-masking.
    loss, mask = losses.min_reprojection_loss(target, [bad], [target])
    assert loss.item() == 0.0 and not bool(mask.any())
    loss, mask = losses.min_reprojection_loss(target, [bad], [target], automask=False)
    assert loss.item() > 0 and bool(mask.all())


def test_edge_aware_smoothness():
    image = torch.rand(1, 3, H, W)
    assert losses.edge_aware_smoothness(torch.ones(1, 1, H, W), image).item() == pytest.approx(0.0)
    ramp = torch.linspace(1, 2, W).view(1, 1, 1, W).expand(1, 1, H, W)
    flat_image = torch.zeros(1, 3, H, W)
    edgy_image = torch.zeros(1, 3, H, W)
    edgy_image[..., ::2] = 1.0
    smooth_flat = losses.edge_aware_smoothness(ramp, flat_image).item()
    assert smooth_flat > 0
    assert losses.edge_aware_smoothness(ramp, edgy_image).item() < smooth_flat


def test_flow_photometric_loss_and_twist_loss():
    image1 = torch.rand(1, 3, H, W)
    image2 = torch.roll(image1, shifts=1, dims=3)  # content moves 1 px right
    flow = torch.zeros(1, 2, H, W)
    flow[:, 0] = 1.0
    interior = torch.ones(1, 1, H, W, dtype=torch.bool)
    interior[..., -2:] = False  # SSIM windows there reach the zero padding beyond the image
    assert losses.flow_photometric_loss(image1, image2, flow, interior).item() == pytest.approx(0.0, abs=1e-4)
    assert losses.flow_photometric_loss(image1, image2, torch.zeros_like(flow)).item() > 0.05
    gt = torch.tensor([[0.1, 0.0, 0.0, 0.0, 0.01, 0.0]])
    assert losses.twist_loss(gt, gt).item() == 0.0
    assert losses.twist_loss(torch.zeros_like(gt), gt).item() == pytest.approx(0.1 / 3 + 10 * 0.01 / 3)
