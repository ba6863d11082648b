"""Procedural textures and their mip-mapped sampling."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from geovis_ros.synthetic.textures import (
    PROCEDURAL_KINDS,
    TextureBank,
    TextureError,
    build_texture_bank,
    fractal_noise,
    load_image_textures,
    procedural_texture,
    value_noise,
)


def box_blur(image: np.ndarray, size: int) -> np.ndarray:
    """Periodic box filter (tiles wrap)."""
    return cv2.blur(np.pad(image, size, mode="wrap"), (size, size))[size:-size, size:-size]


@pytest.mark.parametrize("kind", PROCEDURAL_KINDS)
def test_procedural_textures_are_tileable_rgb_with_detail_at_every_scale(kind):
    texture = procedural_texture(np.random.default_rng(3), kind, 128)
    assert texture.shape == (128, 128, 3) and texture.dtype == np.float32
    assert texture.min() >= 0.0 and texture.max() <= 1.0
    grey = texture.mean(axis=2)
    # Seamless: the tile border is no stronger an edge than the strongest column / row boundary
    # inside the tile (checkers and bricks have true edges on the border, like inside).
    for axis in (0, 1):
        inner = np.abs(np.diff(grey, axis=axis)).mean(axis=1 - axis)
        seam = np.abs(np.take(grey, 0, axis=axis) - np.take(grey, -1, axis=axis)).mean()
        assert seam <= 1.05 * inner.max()
    # Fine detail (texel scale) and coarse structure (a quarter of the tile) both carry contrast.
    fine = grey - box_blur(grey, 3)
    coarse = box_blur(grey, 9) - box_blur(grey, 33)
    assert fine.std() > 0.01 and coarse.std() > 0.01


def test_noise_is_deterministic_tileable_and_spans_unit_range():
    a = fractal_noise(np.random.default_rng(0), 64)
    np.testing.assert_array_equal(a, fractal_noise(np.random.default_rng(0), 64))
    assert a.min() == 0.0 and a.max() == 1.0
    lattice = value_noise(np.random.default_rng(1), 32, 32)  # one cell per texel: the lattice itself
    assert len(np.unique(lattice)) == 32 * 32


def test_unknown_texture_kind_is_refused():
    with pytest.raises(TextureError, match="unknown texture kind 'marble'"):
        procedural_texture(np.random.default_rng(0), "marble")


def _bank_of(*textures: np.ndarray) -> TextureBank:
    return TextureBank.from_textures(list(textures))


def test_sampling_texel_centres_returns_texels_and_wraps():
    rng = np.random.default_rng(0)
    texture = rng.random((8, 8, 3))
    bank = _bank_of(texture)
    rows, cols = np.mgrid[0:8, 0:8]
    uv = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    expected = np.round(texture.reshape(-1, 3) * 255) / 255  # stored as 8 bit
    zeros = np.zeros(64, dtype=int)
    np.testing.assert_allclose(bank.sample(zeros, uv, np.zeros(64)), expected, atol=1e-6)
    np.testing.assert_allclose(bank.sample(zeros, uv + [8.0, -16.0], np.zeros(64)), expected, atol=1e-5)
    halfway = bank.sample(np.zeros(1, int), np.array([[1.0, 0.5]]), np.zeros(1))[0]
    np.testing.assert_allclose(halfway, (expected[0] + expected[1]) / 2, atol=1e-6)


def test_coarse_level_of_detail_averages_the_tile():
    checker = np.indices((16, 16)).sum(axis=0) % 2
    bank = _bank_of(np.repeat(checker[..., None], 3, axis=2).astype(float))
    far = bank.sample(np.zeros(5, int), np.random.default_rng(1).random((5, 2)) * 16, np.full(5, 10.0))
    np.testing.assert_allclose(far, 0.5, atol=1 / 255)
    near = bank.sample(np.zeros(1, int), np.array([[0.5, 0.5]]), np.full(1, -3.0))
    assert near[0, 0] in (0.0, 1.0)


def test_textures_of_a_bank_are_kept_apart():
    bank = _bank_of(np.zeros((4, 4, 3)), np.ones((4, 4, 3)))
    colours = bank.sample(np.array([0, 1]), np.array([[1.3, 2.7], [1.3, 2.7]]), np.array([0.5, 0.5]))
    np.testing.assert_allclose(colours, [[0, 0, 0], [1, 1, 1]], atol=1e-6)
    with pytest.raises(TextureError, match="out of range"):
        bank.sample(np.array([2]), np.zeros((1, 2)), np.zeros(1))


def test_bank_refuses_bad_textures():
    with pytest.raises(TextureError, match="power of two"):
        _bank_of(np.zeros((6, 6, 3)))
    with pytest.raises(TextureError, match="at least one"):
        TextureBank.from_textures([])


def test_build_bank_has_every_kind_and_user_images(tmp_path: Path):
    image = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    cv2.imwrite(str(tmp_path / "b.jpg"), image)
    (tmp_path / "notes.txt").write_text("not an image")
    bank = build_texture_bank(np.random.default_rng(0), per_kind=1, texture_dir=tmp_path, size=32)
    assert bank.count == len(PROCEDURAL_KINDS) + 2 and bank.user_count == 2 and bank.size == 32
    assert len(bank.levels) == 6 and bank.levels[-1].shape == (bank.count,)


def test_user_texture_folder_errors_name_the_folder(tmp_path: Path):
    with pytest.raises(TextureError, match="does not exist"):
        load_image_textures(tmp_path / "missing")
    with pytest.raises(TextureError, match="no image files"):
        load_image_textures(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(TextureError, match="broken.png"):
        load_image_textures(tmp_path)
