"""Procedural, tileable surface textures and their mip-mapped sampling for the synthetic world.

A texture is a square (S, S, 3) float32 RGB tile in [0, 1] that repeats seamlessly (every
generator is periodic over the tile), so a surface of any size can be covered by wrapping its
surface coordinates. Each tile carries detail at every scale from the whole tile down to one
texel (fractal value noise is mixed into every kind), which photometric alignment and optical
flow need at all distances.

Sampling is trilinear: bilinear inside the two mip levels that bracket a per-sample level of
detail, blended linearly, so distant or slanted surfaces are filtered instead of aliased.

Texture coordinates ``(u, v)`` are continuous, in texels of level 0 (``u`` along the tile's
columns, ``v`` along its rows); the texel in row i, column j covers [j, j + 1) x [i, i + 1), so its
centre is at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from geovis_ros.errors import GeovisError

TEXTURE_SIZE = 256
"""Side of every texture tile in texels (a power of two, so the mip chain ends at 1 x 1)."""

PROCEDURAL_KINDS = ("noise", "gradient", "stripes", "shapes", "checker", "bricks")
"""The procedural texture families, in the order :func:`build_texture_bank` cycles through them."""


class TextureError(GeovisError, ValueError):
    """A texture folder or texture array is unusable (message names the folder or the problem)."""


# ------------------------------------------------------------------------------------ noise basis


def _fade(t: NDArray[np.float64]) -> NDArray[np.float64]:
    """Quintic smoothstep 6t^5 - 15t^4 + 10t^3 (C2-continuous interpolation weight)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def value_noise(rng: np.random.Generator, size: int, cells: int) -> NDArray[np.float64]:
    """(size, size) tileable value noise in [0, 1] with ``cells`` x ``cells`` random lattice values.

    The lattice wraps around, so the tile is periodic; ``cells == size`` gives texel-level detail.
    """
    lattice = rng.random((cells, cells))
    coord = (np.arange(size) + 0.5) * (cells / size) - 0.5
    i0 = np.floor(coord).astype(np.int64)
    weight = _fade(coord - i0)
    i0 %= cells
    i1 = (i0 + 1) % cells
    rows = lattice[:, i0] * (1.0 - weight) + lattice[:, i1] * weight  # (cells, size): along u
    return rows[i0, :] * (1.0 - weight[:, None]) + rows[i1, :] * weight[:, None]


def fractal_noise(
    rng: np.random.Generator, size: int, base_cells: int = 2, persistence: float = 0.6
) -> NDArray[np.float64]:
    """(size, size) tileable fractal value noise in [0, 1]: octaves from ``base_cells`` to one texel.

    Octave k has ``base_cells * 2**k`` lattice cells and amplitude ``persistence**k``; the sum is
    rescaled to span [0, 1] exactly.
    """
    total = np.zeros((size, size))
    cells, amplitude = base_cells, 1.0
    while cells <= size:
        total += amplitude * value_noise(rng, size, cells)
        cells, amplitude = cells * 2, amplitude * persistence
    total -= total.min()
    return total / max(float(total.max()), 1e-12)


def _random_palette(rng: np.random.Generator, count: int) -> NDArray[np.float64]:
    """(count, 3) random RGB colours in [0, 1], spread in brightness so ramps have contrast."""
    brightness = np.sort(rng.uniform(0.15, 1.0, count))
    hue = rng.uniform(0.0, 1.0, (count, 3))
    colours = brightness[:, None] * (0.6 + 0.4 * hue / hue.max(axis=1, keepdims=True))
    return np.clip(colours, 0.0, 1.0)


def _apply_palette(values: NDArray[np.float64], palette: NDArray[np.float64]) -> NDArray[np.float64]:
    """Map scalar values in [0, 1] (H, W) through an RGB ramp (n, 3) -> (H, W, 3)."""
    stops = np.linspace(0.0, 1.0, len(palette))
    return np.stack([np.interp(values, stops, palette[:, c]) for c in range(3)], axis=-1)


def _periodic_coords(size: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(size, size) u and v coordinates in tile units [0, 1) at texel centres."""
    axis = (np.arange(size) + 0.5) / size
    return np.meshgrid(axis, axis)


# ---------------------------------------------------------------------------------- generators


def _noise_texture(rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    base = fractal_noise(rng, size, int(rng.choice([1, 2, 4])), rng.uniform(0.5, 0.7))
    return _apply_palette(base, _random_palette(rng, 4))


def _gradient_texture(rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    u, v = _periodic_coords(size)
    ku, kv = rng.integers(0, 3, 2)
    ku = max(int(ku), 1 - int(kv > 0))  # never both zero
    ramp = 0.5 + 0.5 * np.cos(2.0 * np.pi * (ku * u + kv * v) + rng.uniform(0, 2 * np.pi))
    warp = fractal_noise(rng, size, 2, 0.5)
    return _apply_palette(np.clip(0.8 * ramp + 0.2 * warp, 0.0, 1.0), _random_palette(rng, 3))


def _stripes_texture(rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    u, v = _periodic_coords(size)
    ku, kv = rng.integers(-12, 13, 2)
    if ku == 0 and kv == 0:
        ku = 8
    phase = 2.0 * np.pi * (ku * u + kv * v) + 1.5 * fractal_noise(rng, size, 2, 0.5)
    bands = 0.5 + 0.5 * np.tanh(rng.uniform(1.5, 6.0) * np.sin(phase))
    return _apply_palette(bands, _random_palette(rng, 2))


def _shapes_texture(rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    image = _apply_palette(fractal_noise(rng, size, 2, 0.55), _random_palette(rng, 3))
    for _ in range(int(rng.integers(25, 60))):
        centre = rng.random(2) * size
        half = rng.uniform(0.015, 0.12, 2) * size
        # Only the shape's window is touched; wrapped indices keep it continuous across the border.
        cols = np.arange(int(centre[0] - half[0]) - 1, int(centre[0] + half[0]) + 2)
        rows = np.arange(int(centre[1] - half[1]) - 1, int(centre[1] + half[1]) + 2)
        du = (cols + 0.5 - centre[0])[None, :] / half[0]
        dv = (rows + 0.5 - centre[1])[:, None] / half[1]
        if rng.random() < 0.5:
            inside = du**2 + dv**2 <= 1.0
        else:
            inside = (np.abs(du) <= 1.0) & (np.abs(dv) <= 1.0)
        window = np.ix_(rows % size, cols % size)
        patch = image[window]
        patch[inside] = rng.uniform(0.05, 1.0, 3)
        image[window] = patch
    return image


def _checker_texture(rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    u, v = _periodic_coords(size)
    cells = int(rng.choice([2, 4, 8]))
    parity = (np.floor(u * cells) + np.floor(v * cells)) % 2
    palette = _random_palette(rng, 2)
    cell_shade = rng.uniform(0.8, 1.2, (cells, cells))
    shade = cell_shade[(v * cells).astype(int), (u * cells).astype(int)]
    return np.clip(palette[parity.astype(int)] * shade[..., None], 0.0, 1.0)


def _bricks_texture(rng: np.random.Generator, size: int) -> NDArray[np.float64]:
    u, v = _periodic_coords(size)
    rows = int(rng.choice([4, 8, 16]))
    columns = int(rng.choice([2, 4, 8]))
    row = np.floor(v * rows).astype(int)
    shifted = u * columns + 0.5 * (row % 2)  # every other row offset by half a brick
    column = np.floor(shifted).astype(int) % columns
    brick_colour = _random_palette(rng, 5)[rng.integers(0, 5, (rows, columns))]
    brick_colour *= rng.uniform(0.8, 1.2, (rows, columns, 1))
    mortar_width = rng.uniform(0.04, 0.12)
    in_mortar = ((v * rows) % 1.0 < mortar_width) | (shifted % 1.0 < mortar_width * rows / columns / 2)
    image = brick_colour[row, column]
    image[in_mortar] = rng.uniform(0.3, 0.9) * np.ones(3)
    return np.clip(image, 0.0, 1.0)


_GENERATORS: dict[str, Callable[[np.random.Generator, int], NDArray[np.float64]]] = {
    "noise": _noise_texture,
    "gradient": _gradient_texture,
    "stripes": _stripes_texture,
    "shapes": _shapes_texture,
    "checker": _checker_texture,
    "bricks": _bricks_texture,
}


def procedural_texture(rng: np.random.Generator, kind: str, size: int = TEXTURE_SIZE) -> NDArray[np.float32]:
    """(size, size, 3) float32 tileable RGB texture in [0, 1] of one of :data:`PROCEDURAL_KINDS`.

    Every kind is modulated by fine fractal noise (texel-level to tile-level) so it carries
    gradients at all scales.
    """
    if kind not in _GENERATORS:
        raise TextureError(f"unknown texture kind {kind!r}; expected one of {', '.join(PROCEDURAL_KINDS)}")
    base = _GENERATORS[kind](rng, size)
    detail = fractal_noise(rng, size, 8, rng.uniform(0.65, 0.8))
    strength = rng.uniform(0.35, 0.6)
    return np.clip(base * (1.0 - strength / 2 + strength * detail[..., None]), 0.0, 1.0).astype(np.float32)


def load_image_textures(folder: Path, size: int = TEXTURE_SIZE) -> list[NDArray[np.float32]]:
    """Every image in ``folder`` as a (size, size, 3) float32 RGB texture in [0, 1].

    Images are resized (area filter) to the square tile; they wrap with a seam at the tile border.
    Raises :class:`TextureError` when the folder does not exist or holds no readable image.
    """
    import cv2

    from geovis_ros.data.image_io import DatasetError, list_images, read_rgb

    folder = Path(folder)
    try:
        paths = list_images(folder)
    except DatasetError as err:
        raise TextureError(f"texture folder {folder}: does not exist or is not a folder") from err
    if not paths:
        raise TextureError(f"texture folder {folder}: holds no image files (png, jpg, ...)")
    textures = []
    for path in paths:
        try:
            rgb = read_rgb(path)
        except DatasetError as err:
            raise TextureError(f"texture image {path}: {err}") from err
        resized = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        textures.append(resized.astype(np.float32) / 255.0)
    return textures


# ------------------------------------------------------------------------------------ mip bank


def _downsample(level: NDArray[np.float32]) -> NDArray[np.float32]:
    """Halve (T, S, S, 3) textures with a 2x2 box filter (periodicity is preserved)."""
    return 0.25 * (level[:, 0::2, 0::2] + level[:, 1::2, 0::2] + level[:, 0::2, 1::2] + level[:, 1::2, 1::2])


@dataclass(frozen=True)
class TextureBank:
    """A stack of equally sized tileable textures with their mip chains, ready for sampling.

    Attributes:
        levels: per mip level l, the textures as a flat (T * S_l * S_l,) uint32 array of packed
            RGBA8 texels (texture-major, then rows, then columns), S_l = size >> l, down to 1 x 1.
            One 32-bit gather fetches a whole texel.
        size: side S of level 0 in texels.
        count: number of textures T.
        user_count: how many of the textures (the last ones) came from user images.

    """

    levels: tuple[NDArray[np.uint32], ...]
    size: int
    count: int
    user_count: int = 0

    @classmethod
    def from_textures(cls, textures: Sequence[NDArray[np.floating]], user_count: int = 0) -> TextureBank:
        """Bank of ``textures`` (each (S, S, 3), values in [0, 1], S a power of two), stored as 8 bit."""
        if not textures:
            raise TextureError("a texture bank needs at least one texture")
        stack = np.stack([np.asarray(t, dtype=np.float32) for t in textures])
        size = stack.shape[1]
        if stack.ndim != 4 or stack.shape[2] != size or stack.shape[3] != 3 or size & (size - 1):
            raise TextureError(f"textures must be (S, S, 3) with S a power of two, got {stack.shape[1:]}")
        levels = [stack]
        while levels[-1].shape[1] > 1:
            levels.append(_downsample(levels[-1]))
        packed = []
        for level in levels:
            rgba = np.zeros(level.shape[:3] + (4,), dtype=np.uint8)
            rgba[..., :3] = np.round(np.clip(level, 0.0, 1.0) * 255.0)
            packed.append(rgba.reshape(-1, 4).view(np.uint32)[:, 0].copy())
        return cls(levels=tuple(packed), size=size, count=len(stack), user_count=user_count)

    def _fetch(self, level: int, index: NDArray[np.integer]) -> NDArray[np.float32]:
        """(n, 3) float32 RGB in [0, 255] of the texels at flat ``index`` of ``level``."""
        texels = self.levels[level][index]
        return texels.view(np.uint8).reshape(-1, 4)[:, :3].astype(np.float32)

    def _bilinear(
        self, level: int, texture: NDArray[np.integer], u: NDArray[np.float64], v: NDArray[np.float64]
    ) -> NDArray[np.float32]:
        side = self.size >> level
        scale = 1.0 / (1 << level)
        x = u * scale - 0.5
        y = v * scale - 0.5
        x0 = np.floor(x)
        y0 = np.floor(y)
        wx = (x - x0).astype(np.float32)[:, None]
        wy = (y - y0).astype(np.float32)[:, None]
        mask = side - 1  # side is a power of two: "& mask" wraps like "% side"
        xi0 = x0.astype(np.int64) & mask
        yi0 = y0.astype(np.int64) & mask
        xi1 = (xi0 + 1) & mask
        yi1 = (yi0 + 1) & mask
        base = texture * (side * side)
        row0 = base + yi0 * side
        row1 = base + yi1 * side
        top = self._fetch(level, row0 + xi0) * (1.0 - wx) + self._fetch(level, row0 + xi1) * wx
        bottom = self._fetch(level, row1 + xi0) * (1.0 - wx) + self._fetch(level, row1 + xi1) * wx
        return top * (1.0 - wy) + bottom * wy

    def sample(
        self, texture: NDArray[np.integer], uv: NDArray[np.floating], lod: NDArray[np.floating]
    ) -> NDArray[np.float32]:
        """Trilinear samples (N, 3) float32 RGB in [0, 1].

        Args:
            texture: (N,) texture indices in [0, count).
            uv: (N, 2) continuous texel coordinates at level 0 (any real value; they wrap).
            lod: (N,) level of detail, log2 of the texels of level 0 covered by one sample;
                values <= 0 sample level 0 (magnified), values beyond the chain its last level.

        """
        texture = np.asarray(texture, dtype=np.int64)
        uv = np.asarray(uv, dtype=np.float64)
        if texture.size and (texture.min() < 0 or texture.max() >= self.count):
            raise TextureError(f"texture index out of range [0, {self.count})")
        last = len(self.levels) - 1
        lod = np.clip(np.asarray(lod, dtype=np.float32), 0.0, float(last))
        fine = np.minimum(np.floor(lod).astype(np.int64), last)
        blend = (lod - fine)[:, None]
        out = np.empty((len(texture), 3), dtype=np.float32)
        for level in np.unique(fine):
            idx = np.flatnonzero(fine == level)
            u, v, tex = uv[idx, 0], uv[idx, 1], texture[idx]
            colour = self._bilinear(int(level), tex, u, v)
            if level < last:
                coarse = self._bilinear(int(level) + 1, tex, u, v)
                colour += (coarse - colour) * blend[idx]
            out[idx] = colour
        return out * np.float32(1.0 / 255.0)


def build_texture_bank(
    rng: np.random.Generator,
    per_kind: int = 4,
    texture_dir: Path | None = None,
    size: int = TEXTURE_SIZE,
) -> TextureBank:
    """A bank of ``per_kind`` textures of every procedural kind, then the images of ``texture_dir``.

    Deterministic for a given generator state. Texture index ``k * per_kind + i`` is the i-th
    texture of kind ``PROCEDURAL_KINDS[k]``; user images follow (``bank.user_count`` of them).
    """
    textures: list[NDArray[np.float32]] = [
        procedural_texture(rng, kind, size) for kind in PROCEDURAL_KINDS for _ in range(per_kind)
    ]
    user = load_image_textures(Path(texture_dir), size) if texture_dir is not None else []
    return TextureBank.from_textures(textures + user, user_count=len(user))
