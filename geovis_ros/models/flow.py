"""FlowRefineNet: learned coarse-to-fine refinement of a classical (OpenCV DIS) optical flow.

The classical initialisation handles large displacements cheaply; the network corrects it
PWC-style at 1/8, 1/4 and 1/2 resolution: warp the second image's features by the current
flow (GridSample), build a local cost volume (cosine similarity) from explicit shifts, and add a
gated soft-argmax match plus a learned residual. The correction is upsampled and added to the
full-resolution initialisation, so the initialisation's detail is kept.

ONNX contract (opset 17, GridSample needs >= 16; TensorRT >= 8.5 supports it): inputs
``image1``, ``image2`` (B, 3, H, W) float32 normalised like every shipped network and
``flow_init`` (B, 2, H, W) float32 forward flow image1 -> image2 in pixels (u, v);
output ``flow`` (B, 2, H, W) float32 pixels. H and W multiples of :data:`FLOW_MULTIPLE`.
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from geovis_ros.models.blocks import (
    ConvAct,
    DownStage,
    InferFn,
    ModelInputError,
    backward_warp,
    check_spatial_multiple,
    downsample_flow,
    exporting,
    local_correlation,
    module_infer,
    normalize_image,
    unit_features,
    upsample_flow,
)

FLOW_MULTIPLE = 16
DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}
DIS_OBJECTS_KEPT = 8  # DIS objects (preset x image size x seeded) kept per thread
_DIS_OBJECTS = threading.local()  # per thread (a DIS object is not thread-safe): (preset, H, W) -> DIS object


class _LevelEstimator(nn.Module):
    """Flow correction from a local cost volume: a gated soft-argmax match plus a learned residual.

    The soft-argmax of the cost volume (learnable temperature) is the expected displacement of the
    best local match; a small CNN over [cost, features of image1, current flow / scale, match]
    predicts a gate (how far to trust the match) and a residual. Gate and residual start near zero.
    """

    offsets: torch.Tensor

    def __init__(self, radius: int, feat_ch: int) -> None:
        super().__init__()
        side = 2 * radius + 1
        dy, dx = torch.meshgrid(torch.arange(side) - radius, torch.arange(side) - radius, indexing="ij")
        self.register_buffer("offsets", torch.stack([dx, dy], 0).float().view(1, 2, side * side, 1, 1),
                             persistent=False)
        self.log_temperature = nn.Parameter(torch.tensor(1.0))
        self.body = nn.Sequential(
            ConvAct(side * side + feat_ch + 4, 64, norm="none"), ConvAct(64, 48, norm="none"),
            ConvAct(48, 32, norm="none"), ConvAct(32, 32, dilation=2, norm="none"),
        )
        self.out = nn.Conv2d(32, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        self.out.bias = nn.Parameter(torch.tensor([-3.0, 0.0, 0.0]))  # gate starts at sigmoid(-3) ~ 0.05

    def forward(self, cost: torch.Tensor, feat1: torch.Tensor, flow_scaled: torch.Tensor) -> torch.Tensor:
        """Cost (B, K, h, w), features (B, C, h, w), flow / scale (B, 2, h, w) -> correction (B, 2, h, w) px."""
        prob = torch.softmax(cost * torch.exp(self.log_temperature), dim=1)
        match = (prob.unsqueeze(1) * self.offsets).sum(dim=2)
        out = self.out(self.body(torch.cat([cost, feat1, flow_scaled, match], 1)))
        return torch.sigmoid(out[:, :1]) * match + out[:, 1:]


class FlowRefineNet(nn.Module):
    """Refines ``flow_init`` with cost volumes at 1/8 (radius 4), 1/4 (radius 3) and 1/2 (radius 2).

    Args:
        widths: feature channels at 1/2, 1/4 and 1/8 resolution.

    """

    radii = (4, 3, 2)
    scales = (8, 4, 2)

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 48)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.enc1 = DownStage(3, c1, norm="none")
        self.enc2 = DownStage(c1, c2, norm="none")
        self.enc3 = DownStage(c2, c3, norm="none")
        self.estimators = nn.ModuleList(
            [_LevelEstimator(r, c) for r, c in zip(self.radii, (c3, c2, c1), strict=True)]
        )

    def _features(self, image: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.enc1(image)
        f2 = self.enc2(f1)
        f3 = self.enc3(f2)
        return [f3, f2, f1]

    def forward_multiscale(
        self, image1: torch.Tensor, image2: torch.Tensor, flow_init: torch.Tensor
    ) -> list[torch.Tensor]:
        """Full-resolution refined flows (B, 2, H, W) px after the 1/8, 1/4 and 1/2 levels; the last is the output.

        Each level predicts a correction ``delta`` to the (downsampled) initialisation; the output is
        ``flow_init + upsample(delta)``, so the initialisation's full-resolution detail is kept.
        """
        check_spatial_multiple(image1, FLOW_MULTIPLE, "image1")
        if not exporting() and (image1.shape != image2.shape or image1.shape[1] != 3):
            raise ModelInputError(
                f"image1 and image2 must both be (B, 3, H, W), got {tuple(image1.shape)} and {tuple(image2.shape)}"
            )
        if not exporting() and (flow_init.shape[1] != 2 or flow_init.shape[0] != image1.shape[0]
                                or flow_init.shape[2:] != image1.shape[2:]):
            raise ModelInputError(f"flow_init must be (B, 2, H, W) like the images, got {tuple(flow_init.shape)}")
        # Both images go through the encoder as one batch.
        feats = self._features(torch.cat([image1, image2], 0))
        batch = image1.shape[0]
        delta = torch.zeros_like(downsample_flow(flow_init, self.scales[0]))
        outputs = []
        for level, (feat, radius, scale) in enumerate(zip(feats, self.radii, self.scales, strict=True)):
            if level > 0:
                delta = upsample_flow(delta, 2)
            flow = downsample_flow(flow_init, scale) + delta
            f1, f2 = feat[:batch], feat[batch:]
            # Cosine similarity (x C so that values are O(1)): informative even before training.
            cost = local_correlation(unit_features(f1), backward_warp(unit_features(f2), flow), radius) * f1.shape[1]
            delta = delta + self.estimators[level](cost, f1, flow / (64.0 / scale))
            outputs.append(flow_init + upsample_flow(delta, scale))
        return outputs

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, flow_init: torch.Tensor) -> torch.Tensor:
        """Refined forward flow (B, 2, H, W) in pixels."""
        return self.forward_multiscale(image1, image2, flow_init)[-1]


SEED_DOWNSCALE = 4
FLOW_INIT_METHOD = f"dis-medium-seeded-1/{SEED_DOWNSCALE}"


def dis_object(preset: str, height: int, width: int, seeded: bool = False) -> Any:
    """The calling thread's OpenCV DIS optical flow object of ``preset`` for ``height`` x ``width`` images.

    Created once per thread, preset, size and ``seeded``, then reused (the last
    :data:`DIS_OBJECTS_KEPT` kept): one DIS object must not see another image size (OpenCV 4 keeps
    its buffers and crashes), nor two threads at once. Calls with an initial flow (``seeded``) get
    their own object: a DIS object that was given an initial flow carries state into its next
    call without one (results then depend on what ran before, up to 0.02 px on synthetic frames).
    Raises ModelInputError for an unknown preset.
    """
    if preset not in DIS_PRESETS:
        raise ModelInputError(f"unknown DIS preset {preset!r}; choose one of {sorted(DIS_PRESETS)}")
    objects: dict[tuple[str, int, int, bool], Any] = _DIS_OBJECTS.__dict__.setdefault("by_key", {})
    key = (preset, height, width, seeded)
    dis = objects.pop(key, None) or cv2.DISOpticalFlow_create(DIS_PRESETS[preset])  # type: ignore[attr-defined]
    objects[key] = dis  # most recently used last
    while len(objects) > DIS_OBJECTS_KEPT:
        del objects[next(iter(objects))]
    return dis


def dis_flow(
    rgb1: NDArray[np.uint8], rgb2: NDArray[np.uint8], preset: str = "medium", seed_downscale: int = 1
) -> NDArray[np.float32]:
    """OpenCV DIS optical flow (H, W, 2) float32, pixels, from (H, W, 3) uint8 RGB image 1 to image 2.

    ``seed_downscale = 1`` is plain DIS (the classical peer every flow figure is compared with).
    OpenCV DIS picks its coarsest pyramid level from the image size (1/8 at 320x240, and
    ``setCoarsestScale`` cannot go deeper), so motions beyond a few tens of pixels are lost. With
    ``seed_downscale = s > 1`` DIS first runs on the pair area-downscaled by s and reflect-padded
    back to the full size (the padding only makes DIS build a pyramid s times deeper: 1/32 at
    320x240 for s = 4); that flow, upsampled, seeds DIS at full resolution, which keeps DIS's
    sub-pixel detail. Costs about two DIS runs (of reused DIS objects, :func:`dis_object`).
    """
    if rgb1.shape != rgb2.shape or rgb1.ndim != 3 or rgb1.shape[2] != 3:
        raise ModelInputError(f"expected two (H, W, 3) images of equal size, got {rgb1.shape} and {rgb2.shape}")
    if seed_downscale < 1:
        raise ModelInputError(f"seed_downscale must be >= 1, got {seed_downscale}")
    h, w = rgb1.shape[:2]
    gray1 = cv2.cvtColor(rgb1, cv2.COLOR_RGB2GRAY)
    gray2 = cv2.cvtColor(rgb2, cv2.COLOR_RGB2GRAY)
    small_w, small_h = w // seed_downscale, h // seed_downscale
    seed = None
    if seed_downscale > 1 and min(small_w, small_h) >= 8:
        padded = [
            cv2.copyMakeBorder(cv2.resize(g, (small_w, small_h), interpolation=cv2.INTER_AREA),
                               0, h - small_h, 0, w - small_w, cv2.BORDER_REFLECT)
            for g in (gray1, gray2)
        ]
        small_flow = dis_object(preset, h, w).calc(padded[0], padded[1], None)[:small_h, :small_w]
        seed = cv2.resize(small_flow, (w, h), interpolation=cv2.INTER_LINEAR)
        seed *= np.array([w / small_w, h / small_h], np.float32)
    try:
        return np.asarray(dis_object(preset, h, w, seeded=seed is not None).calc(gray1, gray2, seed),
                          dtype=np.float32)
    except cv2.error as err:  # OpenCV refuses images too small for its patches (e.g. 10x10)
        raise ModelInputError(f"DIS optical flow cannot run on {w}x{h} images: {err.err}") from None


def initial_flow(rgb1: NDArray[np.uint8], rgb2: NDArray[np.uint8], preset: str = "medium") -> NDArray[np.float32]:
    """The network's classical initialisation (H, W, 2) float32 px: DIS seeded from 1/:data:`SEED_DOWNSCALE` size."""
    return dis_flow(rgb1, rgb2, preset, SEED_DOWNSCALE)


def pad_to_multiple(array: NDArray[np.generic], multiple: int) -> NDArray[np.generic]:
    """Edge-pad an (H, W, ...) array at the bottom and right so H and W are multiples of ``multiple``."""
    h, w = array.shape[:2]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="edge") if pad_h or pad_w else array


def run_flow(
    infer: InferFn, rgb1: NDArray[np.uint8], rgb2: NDArray[np.uint8], preset: str = "medium"
) -> NDArray[np.float32]:
    """Refined forward flow (H, W, 2) float32, pixels, for two (H, W, 3) uint8 RGB images of any size.

    ``infer`` runs the network (an engine's ``infer`` or :func:`module_infer`). Steps: seeded DIS
    initialisation at full size (:func:`initial_flow`), edge-pad images and flow to a multiple of :data:`FLOW_MULTIPLE`,
    normalise, run, crop back to (H, W).
    """
    h, w = rgb1.shape[:2]
    init = initial_flow(rgb1, rgb2, preset)
    outputs = infer({
        "image1": normalize_image(pad_to_multiple(rgb1, FLOW_MULTIPLE)),
        "image2": normalize_image(pad_to_multiple(rgb2, FLOW_MULTIPLE)),
        "flow_init": np.ascontiguousarray(pad_to_multiple(init, FLOW_MULTIPLE).transpose(2, 0, 1)[None]),
    })
    return np.ascontiguousarray(outputs["flow"][0].transpose(1, 2, 0)[:h, :w], dtype=np.float32)


def predict_flow(
    model: nn.Module, rgb1: NDArray[np.uint8], rgb2: NDArray[np.uint8], preset: str = "medium"
) -> NDArray[np.float32]:
    """:func:`run_flow` with a PyTorch :class:`FlowRefineNet` (any device)."""
    return run_flow(module_infer(model, ("image1", "image2", "flow_init"), ("flow",)), rgb1, rgb2, preset)


def forward_backward_consistency(
    flow_fw: torch.Tensor, flow_bw: torch.Tensor, alpha: float = 0.01, beta: float = 0.5
) -> torch.Tensor:
    """Occlusion / confidence mask (B, 1, H, W) bool from forward and backward flows (B, 2, H, W), px.

    A pixel p is consistent when ``|f(p) + b(p + f(p))|^2 < alpha (|f|^2 + |b(p + f(p))|^2) + beta``
    (UnFlow's test): following the flow there and back returns close to p. Pixels whose forward
    flow leaves the image are inconsistent.
    """
    bw_at_target = backward_warp(flow_bw, flow_fw)
    mismatch = (flow_fw + bw_at_target).pow(2).sum(1, keepdim=True)
    bound = alpha * (flow_fw.pow(2).sum(1, keepdim=True) + bw_at_target.pow(2).sum(1, keepdim=True)) + beta
    _, _, h, w = flow_fw.shape
    ys = torch.arange(h, dtype=flow_fw.dtype, device=flow_fw.device).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=flow_fw.dtype, device=flow_fw.device).view(1, 1, 1, w)
    u = xs + flow_fw[:, :1]
    v = ys + flow_fw[:, 1:]
    inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    return (mismatch < bound) & inside


def forward_backward_mask(
    model: nn.Module, rgb1: NDArray[np.uint8], rgb2: NDArray[np.uint8], preset: str = "medium"
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Forward flow (H, W, 2) float32 px and its consistency mask (H, W) bool, by running the net both ways."""
    flow_fw = predict_flow(model, rgb1, rgb2, preset)
    flow_bw = predict_flow(model, rgb2, rgb1, preset)
    mask = forward_backward_consistency(
        torch.from_numpy(flow_fw.transpose(2, 0, 1)[None].copy()),
        torch.from_numpy(flow_bw.transpose(2, 0, 1)[None].copy()),
    )
    return flow_fw, mask[0, 0].numpy()
