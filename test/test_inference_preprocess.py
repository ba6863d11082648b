"""Pre/post-processing: numpy and torch paths agree; padding, restoring and intrinsics are consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.inference.devices import cuda_unavailable_reason
from geovis_ros.inference.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResizePad,
    normalize_image,
    padded_size,
    resize,
    resize_and_pad,
    restore_flow,
    scale_intrinsics,
    unpad_and_resize,
)

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
NCHW = RNG.random((1, 3, 48, 64), dtype=np.float32)


@pytest.mark.parametrize("mode", ["imagenet", "unit"])
def test_normalize_numpy_matches_formula_and_torch(mode: str) -> None:
    result = normalize_image(RGB, mode)
    assert result.shape == (1, 3, 48, 64) and result.dtype == np.float32 and result.flags.c_contiguous
    unit = RGB.transpose(2, 0, 1)[None] / 255.0
    expected = unit if mode == "unit" else (unit - np.reshape(IMAGENET_MEAN, (1, 3, 1, 1))) / np.reshape(
        IMAGENET_STD, (1, 3, 1, 1))
    np.testing.assert_allclose(result, expected, atol=1e-5)
    from_torch = normalize_image(torch.from_numpy(RGB), mode)
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float32
    np.testing.assert_allclose(from_torch.numpy(), result, atol=1e-6)
    np.testing.assert_allclose(normalize_image(RGB.astype(np.float32) / 255.0, mode), result, atol=1e-5)


def test_normalize_reuses_the_output_buffer() -> None:
    for image, buffer in ((RGB, np.empty((1, 3, 48, 64), np.float32)),
                          (torch.from_numpy(RGB), torch.empty(1, 3, 48, 64))):
        result = normalize_image(image, out=buffer)
        assert result is buffer
        np.testing.assert_allclose(np.asarray(result), np.asarray(normalize_image(image)), atol=1e-6)


def test_normalize_rejects_non_rgb_and_unknown_mode() -> None:
    with pytest.raises(ValueError, match=r"RGB image of shape \(H, W, 3\)"):
        normalize_image(RGB[..., 0])
    with pytest.raises(ValueError, match="normalisation"):
        normalize_image(RGB, "zscore")


@pytest.mark.parametrize("size", [(30, 50), (96, 128), (37, 81), (48, 64)])
@pytest.mark.parametrize("interpolation, tolerance", [("bilinear", 1e-5), ("nearest", 0.0)])
def test_resize_numpy_and_torch_agree(size: tuple[int, int], interpolation: str, tolerance: float) -> None:
    from_numpy = resize(NCHW, size, interpolation)
    from_torch = resize(torch.from_numpy(NCHW), size, interpolation)
    assert from_numpy.shape == (1, 3, *size) and tuple(from_torch.shape) == (1, 3, *size)
    np.testing.assert_allclose(from_numpy, from_torch.numpy(), atol=tolerance, rtol=0)


def test_resize_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        resize(NCHW[0], (10, 10))
    with pytest.raises(ValueError, match="interpolation"):
        resize(NCHW, (10, 10), "cubic")
    with pytest.raises(ValueError, match="positive"):
        resize(NCHW, (0, 10))


def test_padded_size() -> None:
    assert padded_size(240, 320, 32) == (256, 320)
    assert padded_size(480, 640, 16) == (480, 640)
    with pytest.raises(ValueError, match="multiple"):
        padded_size(10, 10, 0)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_resize_and_pad_then_unpad_round_trip(kind: str) -> None:
    tensor = NCHW if kind == "numpy" else torch.from_numpy(NCHW)
    padded, info = resize_and_pad(tensor, 32)
    assert info == ResizePad(source=(48, 64), resized=(48, 64), padded=(64, 64))
    assert (info.pad_bottom, info.pad_right) == (16, 0)
    assert tuple(padded.shape) == (1, 3, 64, 64)
    as_numpy = np.asarray(padded)
    np.testing.assert_array_equal(as_numpy[:, :, 48:], np.repeat(as_numpy[:, :, 47:48], 16, axis=2))  # edge
    np.testing.assert_array_equal(np.asarray(unpad_and_resize(padded, info)), NCHW)


def test_resize_and_pad_numpy_and_torch_agree_with_resizing() -> None:
    from_numpy, info = resize_and_pad(NCHW, 16, size=(36, 50))
    from_torch, info_torch = resize_and_pad(torch.from_numpy(NCHW), 16, size=(36, 50))
    assert info == info_torch and info.padded == (48, 64)
    np.testing.assert_allclose(from_numpy, from_torch.numpy(), atol=1e-5)
    back_numpy = unpad_and_resize(from_numpy, info)
    back_torch = unpad_and_resize(from_torch, info)
    assert back_numpy.shape == NCHW.shape
    np.testing.assert_allclose(back_numpy, back_torch.numpy(), atol=1e-5)


def test_unpad_rejects_wrong_size() -> None:
    _, info = resize_and_pad(NCHW, 32)
    with pytest.raises(ValueError, match="spatial size"):
        unpad_and_resize(NCHW, info)


def test_restore_flow_rescales_vectors_to_source_pixels() -> None:
    info = ResizePad(source=(48, 64), resized=(24, 32), padded=(32, 32))
    network_flow = np.zeros((1, 2, 32, 32), np.float32)
    network_flow[:, 0] = 1.5  # u in network pixels
    network_flow[:, 1] = -0.5
    for flow in (network_flow, torch.from_numpy(network_flow)):
        restored = np.asarray(restore_flow(flow, info))
        assert restored.shape == (1, 2, 48, 64)
        np.testing.assert_allclose(restored[:, 0], 3.0)
        np.testing.assert_allclose(restored[:, 1], -1.0)
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        restore_flow(network_flow[:, :1], info)


def test_scale_intrinsics_matches_intrinsics_resized_and_keeps_principal_point_under_padding() -> None:
    k = Intrinsics(fx=500.0, fy=510.0, cx=319.5, cy=239.5, width=640, height=480)
    _, no_pad = resize_and_pad(np.zeros((1, 3, 480, 640), np.float32), 1, size=(240, 320))
    assert scale_intrinsics(k, no_pad) == k.resized(320, 240)
    _, padded = resize_and_pad(np.zeros((1, 3, 480, 640), np.float32), 32, size=(240, 320))
    scaled = scale_intrinsics(k, padded)
    resized = k.resized(320, 240)
    assert (scaled.fx, scaled.fy, scaled.cx, scaled.cy) == (resized.fx, resized.fy, resized.cx, resized.cy)
    assert (scaled.width, scaled.height) == (320, 256)
    with pytest.raises(ValueError, match="intrinsics are for 640x480"):
        scale_intrinsics(k, ResizePad((48, 64), (48, 64), (48, 64)))


CUDA_MISSING = cuda_unavailable_reason()


@pytest.mark.skipif(CUDA_MISSING is not None, reason=f"needs a CUDA GPU: {CUDA_MISSING}")
def test_gpu_path_matches_cpu_and_stays_on_the_device() -> None:
    frame = torch.from_numpy(RGB).cuda()  # uploaded once, as uint8
    network_input, info = resize_and_pad(normalize_image(frame), 32, size=(36, 50))
    restored = unpad_and_resize(network_input, info)
    assert network_input.is_cuda and restored.is_cuda
    cpu_input, _ = resize_and_pad(normalize_image(RGB), 32, size=(36, 50))
    np.testing.assert_allclose(network_input.cpu().numpy(), cpu_input, atol=1e-4)
