"""Training losses for depth, flow and pose: supervised and self-supervised (view synthesis).

Shapes: images (B, 3, H, W) float in [0, 1] for photometric terms; depth (B, 1, H, W) metres;
flow (B, 2, H, W) pixels (u, v); masks (B, 1, H, W) bool; intrinsics K (B, 3, 3) pixels at the
tensor's resolution; poses (B, 4, 4) ``T_source_target`` (maps target-camera points into the
source camera). Every reduction is a mean over valid pixels; an all-invalid batch gives 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from geovis_ros.models.blocks import backward_warp


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` (broadcastable bool) is True; 0 when nothing is valid."""
    mask = mask.expand_as(values)
    count = mask.sum()
    return torch.where(mask, values, torch.zeros_like(values)).sum() / count.clamp_min(1)


def silog_loss(pred_depth: torch.Tensor, gt_depth: torch.Tensor, mask: torch.Tensor, lam: float = 0.85) -> torch.Tensor:
    """Eigen et al. scale-invariant log loss, per image then averaged over the batch.

    With g = ln(pred) - ln(gt) over the n valid pixels: ``mean(g^2) - lam * mean(g)^2``.
    ``lam = 1`` is fully scale invariant; ``lam < 1`` also penalises a global scale error.
    """
    g = torch.log(pred_depth.clamp_min(1e-6)) - torch.log(gt_depth.clamp_min(1e-6))
    g = torch.where(mask, g, torch.zeros_like(g))
    count = mask.flatten(1).sum(1).clamp_min(1)
    mean_g = g.flatten(1).sum(1) / count
    mean_g2 = (g * g).flatten(1).sum(1) / count
    per_image = mean_g2 - lam * mean_g * mean_g
    has_pixels = mask.flatten(1).any(1)
    return torch.where(has_pixels, per_image, torch.zeros_like(per_image)).sum() / has_pixels.sum().clamp_min(1)


def berhu_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, threshold_ratio: float = 0.2
) -> torch.Tensor:
    """Reverse Huber (FCRN): |x| below c, (x^2 + c^2) / (2c) above; c = ratio * max valid |x| (per batch)."""
    diff = (pred - target).abs()
    diff = torch.where(mask, diff, torch.zeros_like(diff))
    c = (threshold_ratio * diff.max()).detach().clamp_min(1e-6)
    loss = torch.where(diff <= c, diff, (diff * diff + c * c) / (2.0 * c))
    return masked_mean(loss, mask)


def gaussian_nll(mean: torch.Tensor, target: torch.Tensor, log_var: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gaussian negative log-likelihood without the constant: ``0.5 (log_var + (t - mu)^2 / exp(log_var))``."""
    nll = 0.5 * (log_var + (target - mean).pow(2) * torch.exp(-log_var))
    return masked_mean(nll, mask)


def laplacian_nll(
    mean: torch.Tensor, target: torch.Tensor, log_scale: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Laplacian negative log-likelihood without the constant: ``log_b + |t - mu| / b``, b = exp(log_scale)."""
    nll = log_scale + (target - mean).abs() * torch.exp(-log_scale)
    return masked_mean(nll, mask)


def endpoint_error(flow: torch.Tensor, gt_flow: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean end-point error (pixels) over valid pixels; flows (B, 2, H, W), valid (B, 1, H, W)."""
    return masked_mean(torch.linalg.vector_norm(flow - gt_flow, dim=1, keepdim=True), valid)


def multiscale_epe(
    flows: list[torch.Tensor], gt_flow: torch.Tensor, valid: torch.Tensor, weights: list[float],
    exponent: float = 1.0,
) -> torch.Tensor:
    """Weighted sum of EPEs of multi-resolution predictions against the full-resolution truth.

    Each prediction (B, 2, h, w), in pixels of its own grid, is upsampled bilinearly to the truth's
    size with its vectors scaled by the size ratio before comparison. ``exponent < 1`` makes the
    per-pixel term the robust ``(EPE + 0.01) ** exponent`` (PWC-Net fine-tuning), which keeps
    hopeless outliers from dominating.
    """
    if len(flows) != len(weights):
        raise ValueError(f"got {len(flows)} flows but {len(weights)} weights")
    full_w = gt_flow.shape[-1]
    total = gt_flow.new_zeros(())
    for flow, weight in zip(flows, weights, strict=True):
        factor = full_w / flow.shape[-1]
        if flow.shape[-2:] != gt_flow.shape[-2:]:
            flow = F.interpolate(flow, size=gt_flow.shape[-2:], mode="bilinear", align_corners=False) * factor
        if exponent == 1.0:
            total = total + weight * endpoint_error(flow, gt_flow, valid)
        else:
            error = torch.linalg.vector_norm(flow - gt_flow, dim=1, keepdim=True)
            total = total + weight * masked_mean((error + 0.01).pow(exponent), valid)
    return total


def ssim_dissimilarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel (1 - SSIM) / 2 in [0, 1] over 3x3 reflect-padded windows (monodepth2); (B, C, H, W)."""
    c1, c2 = 0.01**2, 0.03**2
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    sigma_x = F.avg_pool2d(x * x, 3, 1) - mu_x * mu_x
    sigma_y = F.avg_pool2d(y * y, 3, 1) - mu_y * mu_y
    sigma_xy = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2)
    return ((1 - numerator / denominator) / 2).clamp(0, 1)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.85) -> torch.Tensor:
    """Per-pixel error (B, 1, H, W): ``alpha * (1 - SSIM) / 2 + (1 - alpha) * L1``, averaged over channels."""
    l1 = (pred - target).abs().mean(1, keepdim=True)
    return alpha * ssim_dissimilarity(pred, target).mean(1, keepdim=True) + (1 - alpha) * l1


def rigid_flow_from_depth(depth: torch.Tensor, k: torch.Tensor, pose_source_target: torch.Tensor) -> torch.Tensor:
    """Flow (B, 2, H, W) px from target pixels to where they appear in the source camera.

    Back-projects the target depth (B, 1, H, W) with K (B, 3, 3), moves the points with
    ``T_source_target`` (B, 4, 4) and projects them with the same K. Points that land at or
    behind the source camera get a huge flow so that sampling reads outside the image.
    """
    b, _, h, w = depth.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=depth.dtype, device=depth.device),
        torch.arange(w, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], 0).view(1, 3, -1)
    rays = torch.linalg.solve(k, pixels.expand(b, 3, h * w))
    points = rays * depth.view(b, 1, -1)
    moved = pose_source_target[:, :3, :3] @ points + pose_source_target[:, :3, 3:]
    projected = k @ moved
    z = projected[:, 2:]
    in_front = z > 1e-3
    uv = projected[:, :2] / torch.where(in_front, z, torch.ones_like(z))
    uv = torch.where(in_front, uv, torch.full_like(uv, -1e4))
    return uv.view(b, 2, h, w) - pixels[:, :2].view(1, 2, h, w)


def inverse_warp(
    source: torch.Tensor, depth: torch.Tensor, k: torch.Tensor, pose_source_target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """View synthesis: the source image (B, C, H, W) resampled into the target view.

    Uses the target depth (B, 1, H, W), intrinsics K (B, 3, 3) and ``T_source_target``.
    Returns (warped (B, C, H, W), valid (B, 1, H, W) bool: the sample fell inside the source).
    """
    flow = rigid_flow_from_depth(depth, k, pose_source_target)
    _, _, h, w = depth.shape
    ys = torch.arange(h, dtype=depth.dtype, device=depth.device).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=depth.dtype, device=depth.device).view(1, 1, 1, w)
    u, v = xs + flow[:, :1], ys + flow[:, 1:]
    valid = (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
    return backward_warp(source, flow), valid


def min_reprojection_loss(
    target: torch.Tensor, warped_sources: list[torch.Tensor], sources: list[torch.Tensor], automask: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """monodepth2 photometric loss: per-pixel minimum over sources, with auto-masking.

    ``warped_sources`` are the sources synthesised into the target view; ``sources`` the raw
    (unwarped) sources. With ``automask`` a pixel counts only where some warped source explains
    it better than every unwarped source (static camera, objects moving with the camera).
    Returns (loss scalar, mask (B, 1, H, W) bool of the pixels that counted).
    """
    reprojection = torch.cat([photometric_error(w, target) for w in warped_sources], 1)
    best_reprojection = reprojection.min(1, keepdim=True).values
    if not automask:
        return best_reprojection.mean(), torch.ones_like(best_reprojection, dtype=torch.bool)
    identity = torch.cat([photometric_error(s, target) for s in sources], 1)
    # A tiny offset breaks ties in favour of the identity on textureless, unchanged regions.
    best_identity = identity.min(1, keepdim=True).values + 1e-5
    mask = best_reprojection < best_identity
    return masked_mean(best_reprojection, mask), mask


def edge_aware_smoothness(field: torch.Tensor, image: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """First-order smoothness of ``field`` weighted by exp(-|image gradient|) (edges may jump).

    ``field`` (B, C, H, W): a disparity (inverse depth, any scale; ``normalize`` divides it by its
    per-image mean, monodepth2) or a flow (``normalize=False``); ``image`` (B, 3, H, W) in [0, 1].
    """
    disp = field / field.mean(dim=(2, 3), keepdim=True).clamp_min(1e-7) if normalize else field
    grad_dx = (disp[..., :, :-1] - disp[..., :, 1:]).abs()
    grad_dy = (disp[..., :-1, :] - disp[..., 1:, :]).abs()
    img_dx = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)
    img_dy = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
    return (grad_dx * torch.exp(-img_dx)).mean() + (grad_dy * torch.exp(-img_dy)).mean()


def flow_photometric_loss(
    image1: torch.Tensor, image2: torch.Tensor, flow: torch.Tensor, occlusion_free: torch.Tensor | None = None
) -> torch.Tensor:
    """Self-supervised flow loss: photometric error between image1 and image2 warped by ``flow``.

    Images (B, 3, H, W) in [0, 1]; ``occlusion_free`` (B, 1, H, W) bool, e.g. from the
    forward-backward consistency test, excludes occluded pixels.
    """
    warped = backward_warp(image2, flow)
    error = photometric_error(warped, image1)
    _, _, h, w = flow.shape
    ys = torch.arange(h, dtype=flow.dtype, device=flow.device).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=flow.dtype, device=flow.device).view(1, 1, 1, w)
    u, v = xs + flow[:, :1], ys + flow[:, 1:]
    mask = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    if occlusion_free is not None:
        mask = mask & occlusion_free
    return masked_mean(error, mask)


def twist_loss(pred: torch.Tensor, gt: torch.Tensor, rotation_weight: float = 10.0) -> torch.Tensor:
    """Supervised pose loss on twists (B, 6) = (v, w): L1 on translation + weighted L1 on rotation."""
    return (pred[:, :3] - gt[:, :3]).abs().mean() + rotation_weight * (pred[:, 3:] - gt[:, 3:]).abs().mean()
