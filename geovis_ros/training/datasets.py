"""Training data: synthetic-world sequences (on the fly or pre-rendered), user recordings, batchers.

Splits of the synthetic world (keep evaluation honest):
- training uses the scene types :data:`TRAIN_SCENES` and seeds >= :data:`TRAIN_SEED_BASE`;
- the scene type :data:`HELD_OUT_SCENE` (``corridor``) and every seed < :data:`TRAIN_SEED_BASE`
  are never used in training: evaluate on those.

Sequences are held in memory as :class:`SequenceArrays` (stacked numpy arrays) and can be saved
to / loaded from ``.npz`` shards in a cache folder (``manifest.json`` marks the folder), so a
long training run renders its data once. Batchers draw random samples with a numpy Generator
(deterministic for a given seed) and return dicts of torch tensors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from numpy.typing import NDArray

from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.errors import GeovisError
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import invert, se3_log
from geovis_ros.models.blocks import normalize_image_tensor
from geovis_ros.models.depth import MAX_DEPTH_M
from geovis_ros.models.flow import FLOW_INIT_METHOD, initial_flow

ALL_SCENES = ("room", "corridor", "street", "tabletop")
HELD_OUT_SCENE = "corridor"
TRAIN_SCENES = tuple(s for s in ALL_SCENES if s != HELD_OUT_SCENE)
TRAIN_SEED_BASE = 100_000
SCENE_TRAJECTORIES = {
    "room": ("handheld", "handheld", "drone", "rotation", "standstill"),
    "corridor": ("handheld", "handheld", "drone", "rotation"),
    "street": ("driving", "driving", "handheld", "drone", "rotation"),
    "tabletop": ("handheld", "handheld", "drone", "rotation"),
}
MANIFEST = "manifest.json"
RENDER_ATTEMPTS = 10
OPTIONAL_ARRAYS = ("depth", "poses", "flow", "flow_valid", "flow_init")
FLOW_INIT_METHOD_KEY = "flow_init_method"  # names the initialisation that wrote flow_init


class TrainingDataError(GeovisError, ValueError):
    """Training data is missing, empty or lacks the ground truth a task needs."""


@dataclass
class SequenceArrays:
    """One sequence as stacked arrays (N frames, H x W pixels).

    Attributes:
        rgb: (N, H, W, 3) uint8.
        intrinsics: shared pinhole intrinsics of the frames.
        depth: (N, H, W) float32 metres, NaN invalid, or None.
        poses: (N, 4, 4) float64 T_world_camera, or None.
        flow: (N - 1, H, W, 2) float32 px, frame i -> i + 1, or None.
        flow_valid: (N - 1, H, W) bool, or None.
        flow_init: (N - 1, H, W, 2) float16 px, the network's classical initialisation
            (:func:`geovis_ros.models.flow.initial_flow`) i -> i + 1, or None.

    """

    rgb: NDArray[np.uint8]
    intrinsics: Intrinsics
    depth: NDArray[np.float32] | None = None
    poses: NDArray[np.float64] | None = None
    flow: NDArray[np.float32] | None = None
    flow_valid: NDArray[np.bool_] | None = None
    flow_init: NDArray[np.float16] | None = None

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    @classmethod
    def from_frames(
        cls, frames: Iterable[SequenceFrame], with_flow_init: bool = False, max_frames: int | None = None
    ) -> SequenceArrays:
        """Stack frames; ground truth is kept only where every frame has it (flow: all but the last)."""
        items = []
        for frame in frames:
            items.append(frame)
            if max_frames is not None and len(items) >= max_frames:
                break
        if len(items) < 2:
            raise TrainingDataError(f"a training sequence needs at least 2 frames, got {len(items)}")
        rgb = np.stack([f.rgb for f in items])
        has_depth = all(f.depth is not None for f in items)
        has_poses = all(f.pose is not None for f in items)
        depth = np.stack([f.depth for f in items if f.depth is not None]).astype(np.float32) if has_depth else None
        poses = np.stack([f.pose for f in items if f.pose is not None]).astype(np.float64) if has_poses else None
        head = items[:-1]
        has_flow = all(f.flow is not None and f.flow_valid is not None for f in head)
        flow = np.stack([f.flow for f in head if f.flow is not None]).astype(np.float32) if has_flow else None
        flow_valid = np.stack([f.flow_valid for f in head if f.flow_valid is not None]) if has_flow else None
        flow_init = None
        if with_flow_init:
            flow_init = initial_flows(np.stack([f.rgb for f in items]))
        return cls(rgb, items[0].intrinsics, depth, poses, flow, flow_valid, flow_init)

    def save(self, path: Path) -> None:
        """Write to one ``.npz`` file (uncompressed; missing arrays are simply absent)."""
        k = self.intrinsics
        arrays: dict[str, NDArray[np.generic]] = {
            "rgb": self.rgb,
            "intrinsics": np.array([k.fx, k.fy, k.cx, k.cy, k.width, k.height], dtype=np.float64),
        }
        for name in OPTIONAL_ARRAYS:
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        if self.flow_init is not None:
            arrays[FLOW_INIT_METHOD_KEY] = np.array(FLOW_INIT_METHOD)
        np.savez(path, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path, fields: Sequence[str] | None = None) -> SequenceArrays:
        """Read a file written by :meth:`save`; ``fields`` limits the optional arrays read (default all)."""
        wanted = OPTIONAL_ARRAYS if fields is None else tuple(fields)
        with np.load(path) as data:
            fx, fy, cx, cy, w, h = data["intrinsics"].tolist()
            optional = {n: data[n] if n in data and n in wanted else None for n in OPTIONAL_ARRAYS}
            stored_method = str(data[FLOW_INIT_METHOD_KEY]) if FLOW_INIT_METHOD_KEY in data else "dis-medium"
            if optional["flow_init"] is not None and stored_method != FLOW_INIT_METHOD:
                optional["flow_init"] = initial_flows(data["rgb"])  # written by an older initialisation
            return cls(data["rgb"], Intrinsics(fx, fy, cx, cy, int(w), int(h)), **optional)


def initial_flows(rgb: NDArray[np.uint8]) -> NDArray[np.float16]:
    """The flow network's initialisation (N - 1, H, W, 2) float16 px between consecutive frames of (N, H, W, 3) RGB."""
    return np.stack([initial_flow(a, b) for a, b in zip(rgb[:-1], rgb[1:], strict=True)]).astype(np.float16)


def random_synth_config(  # noqa: ANN201
    rng: np.random.Generator, split: str, width: int, height: int, frames: int, scenes: Sequence[str] | None = None
):
    """A random :class:`geovis_ros.synthetic.scenes.SynthConfig` for ``split`` ``train`` or ``val``.

    ``train``: scene in :data:`TRAIN_SCENES`, seed >= :data:`TRAIN_SEED_BASE`; ``val``: any scene
    (the held-out one included), seed < :data:`TRAIN_SEED_BASE`. ``scenes`` narrows the scene
    choice. Frame rate, field of view, moving objects and lighting changes vary so that motions
    range from sub-pixel to > 20 px.
    """
    from geovis_ros.synthetic.scenes import SynthConfig

    if split not in ("train", "val"):
        raise TrainingDataError(f"split must be 'train' or 'val', got {split!r}")
    allowed = TRAIN_SCENES if split == "train" else ALL_SCENES
    choices = tuple(scenes) if scenes else allowed
    if not choices or any(s not in allowed for s in choices):
        raise TrainingDataError(f"scenes {list(choices)} are not allowed in the {split} split (allowed: {allowed})")
    scene = str(rng.choice(choices))
    if split == "train":
        seed = TRAIN_SEED_BASE + int(rng.integers(0, 2**31 - TRAIN_SEED_BASE))
    else:
        seed = int(rng.integers(0, TRAIN_SEED_BASE))
    return SynthConfig(
        scene=scene,
        trajectory=str(rng.choice(SCENE_TRAJECTORIES[scene])),
        frames=frames,
        width=width,
        height=height,
        seed=seed,
        fps=float(rng.choice([5.0, 10.0, 15.0, 30.0])),
        hfov_deg=float(rng.uniform(50.0, 90.0)),
        moving_objects=int(rng.integers(0, 4)),
        lighting_changes=bool(rng.random() < 0.3),
    )


def render_synth_sequence(
    rng: np.random.Generator, split: str, width: int, height: int, frames: int, with_flow_init: bool,
    scenes: Sequence[str] | None = None,
) -> SequenceArrays:
    """Render one random synthetic sequence (see :func:`random_synth_config`) with flow ground truth.

    A configuration the renderer refuses (e.g. no room for the moving objects) is replaced by the
    next random one, up to :data:`RENDER_ATTEMPTS` times.
    """
    from geovis_ros.synthetic.scenes import SynthConfigError, render_sequence

    errors = []
    for _ in range(RENDER_ATTEMPTS):
        config = random_synth_config(rng, split, width, height, frames, scenes)
        try:
            frames_iter = render_sequence(config, with_flow=True)
            return SequenceArrays.from_frames(frames_iter, with_flow_init=with_flow_init)
        except SynthConfigError as err:
            errors.append(str(err))
    raise TrainingDataError(f"the renderer refused {RENDER_ATTEMPTS} random configurations: {errors}")


def write_synth_cache(
    out_dir: Path, split: str, sequences: int, frames: int, width: int, height: int, seed: int,
    worker: tuple[int, int] = (0, 1), scenes: Sequence[str] | None = None,
) -> list[Path]:
    """Pre-render ``sequences`` random sequences into ``out_dir`` (``.npz`` shards + manifest); returns the shards.

    Shard ``i`` depends only on (seed, i). Shards already present are kept, so an interrupted render
    resumes; ``worker = (k, n)`` renders only the shards with ``i % n == k`` so n processes can share
    the work.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, object] = {"split": split, "width": width, "height": height, "frames": frames, "seed": seed}
    if scenes:
        manifest["scenes"] = list(scenes)
    manifest_path = out_dir / MANIFEST
    if manifest_path.is_file() and json.loads(manifest_path.read_text()) != manifest:
        raise TrainingDataError(f"{out_dir} holds a cache with other settings ({manifest_path.read_text()})")
    manifest_path.write_text(json.dumps(manifest))
    paths = []
    for index in range(worker[0], sequences, worker[1]):
        path = out_dir / f"seq_{index:05d}.npz"
        if not path.is_file():
            rng = np.random.default_rng([seed, index])
            arrays = render_synth_sequence(rng, split, width, height, frames, with_flow_init=True, scenes=scenes)
            tmp = path.with_suffix(".tmp.npz")
            arrays.save(tmp)
            tmp.replace(path)
        paths.append(path)
    return paths


def load_cache(folder: Path, fields: Sequence[str] | None = None) -> list[SequenceArrays]:
    """All sequences of a cache folder written by :func:`write_synth_cache`.

    ``fields`` limits the optional arrays loaded (e.g. ``("depth",)``) to save memory.
    """
    shards = sorted(p for p in folder.glob("seq_*.npz") if not p.name.endswith(".tmp.npz"))
    if not shards:
        raise TrainingDataError(f"{folder} holds no seq_*.npz shards")
    return [SequenceArrays.load(p, fields) for p in shards]


class CacheFolder:
    """The sequences of a cache folder, picking up shards written after start (a render still running).

    ``refresh()`` counts one draw and rescans the folder every ``rescan_every`` draws.
    """

    def __init__(self, folder: Path, fields: Sequence[str] | None = None, rescan_every: int = 100) -> None:
        self.folder = folder
        self.fields = fields
        self.rescan_every = rescan_every
        self._draws = 0
        self._loaded: set[str] = set()
        self.sequences: list[SequenceArrays] = []
        if not self._rescan():
            raise TrainingDataError(f"{folder} holds no seq_*.npz shards")

    def _rescan(self) -> int:
        shards = sorted(p for p in self.folder.glob("seq_*.npz") if not p.name.endswith(".tmp.npz"))
        new = [p for p in shards if p.name not in self._loaded]
        for path in new:
            self.sequences.append(SequenceArrays.load(path, self.fields))
            self._loaded.add(path.name)
        return len(new)

    def refresh(self) -> None:
        """Count one draw; load new shards when it is time."""
        self._draws += 1
        if self._draws % self.rescan_every == 0:
            self._rescan()


def is_cache(folder: Path) -> bool:
    """True when ``folder`` is a pre-rendered cache (has a manifest)."""
    return (folder / MANIFEST).is_file()


def load_recording(path: Path, max_frames: int, width: int, height: int, with_flow_init: bool) -> SequenceArrays:
    """A user recording (video, image folder, bag: anything ``open_sequence`` reads) resized to width x height."""
    from geovis_ros.data.readers import open_sequence

    def resized() -> Iterator[SequenceFrame]:
        for frame in open_sequence(path):
            k = frame.intrinsics
            rgb = np.asarray(cv2.resize(frame.rgb, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8)
            yield SequenceFrame(frame.name, frame.stamp_ns, rgb, k.resized(width, height))

    return SequenceArrays.from_frames(resized(), with_flow_init=with_flow_init, max_frames=max_frames)


class SynthStream:
    """A pool of synthetic sequences rendered on the fly; one is replaced every ``refresh_every`` draws."""

    def __init__(
        self, rng: np.random.Generator, width: int, height: int, frames: int, pool: int, refresh_every: int
    ) -> None:
        self._rng = rng
        self._args = (width, height, frames)
        self._refresh_every = refresh_every
        self._draws = 0
        self.sequences = [self._render() for _ in range(pool)]

    def _render(self) -> SequenceArrays:
        width, height, frames = self._args
        return render_synth_sequence(self._rng, "train", width, height, frames, with_flow_init=True)

    def refresh(self) -> None:
        """Count one draw; replace the oldest sequence when it is time."""
        self._draws += 1
        if self._draws % self._refresh_every == 0:
            self.sequences = self.sequences[1:] + [self._render()]


def _resize_rgb(rgb: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    if rgb.shape[1::-1] == size:
        return rgb
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def _to_chw(images: Sequence[NDArray[np.generic]]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))


def _photometric_jitter(rng: np.random.Generator, rgbs: list[NDArray[np.uint8]]) -> list[NDArray[np.uint8]]:
    """The same random brightness/contrast/colour change applied to every image of one sample."""
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, size=3)
    bias = rng.uniform(-15, 15)
    return [np.clip(rgb.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8) for rgb in rgbs]


class Batcher:
    """Random training batches from a list of sequences.

    ``depth_batch``: image, depth (metric, NaN-free with a mask), fx at the batch size.
    ``flow_batch``: image1, image2, flow_init, flow, valid (random crops at full resolution).
    ``pose_batch``: image1, image2, twist of T_cam2_cam1.
    ``triplet_batch``: prev, target, next images in [0, 1] and normalised, K at the batch size.
    """

    def __init__(self, sequences: Sequence[SequenceArrays], rng: np.random.Generator, augment: bool = True) -> None:
        if not sequences:
            raise TrainingDataError("no training sequences")
        self.sequences = sequences
        self.rng = rng
        self.augment = augment

    def _pick(self, need: str, margin: int) -> tuple[SequenceArrays, int]:
        usable = [s for s in self.sequences if getattr(s, need) is not None and len(s) > margin] if need else [
            s for s in self.sequences if len(s) > margin
        ]
        if not usable:
            raise TrainingDataError(f"no sequence has {need or 'enough frames'} (need > {margin} frames)")
        seq = usable[int(self.rng.integers(len(usable)))]
        return seq, int(self.rng.integers(len(seq) - margin))

    def depth_batch(self, batch: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Image (B, 3, H, W) normalised, depth (B, 1, H, W) m (0 where invalid), valid, fx (B,)."""
        images, depths, fxs = [], [], []
        for _ in range(batch):
            seq, i = self._pick("depth", 0)
            rgb = _resize_rgb(seq.rgb[i], size)
            depth = np.asarray(seq.depth)[i]
            if depth.shape[::-1] != size:
                depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
            if self.augment:
                rgb = _photometric_jitter(self.rng, [rgb])[0]
                if self.rng.random() < 0.5:
                    rgb, depth = rgb[:, ::-1], depth[:, ::-1]
            images.append(rgb)
            depths.append(depth)
            fxs.append(seq.intrinsics.resized(*size).fx)
        depth_t = torch.from_numpy(np.ascontiguousarray(np.stack(depths)[:, None]))
        valid = torch.isfinite(depth_t) & (depth_t > 0) & (depth_t < MAX_DEPTH_M)
        return {
            "image": normalize_image_tensor(_to_chw(images)),
            "depth": torch.where(valid, depth_t, torch.zeros_like(depth_t)),
            "valid": valid,
            "fx": torch.tensor(fxs, dtype=torch.float32),
        }

    def flow_batch(
        self, batch: int, crop: tuple[int, int], with_backward_init: bool = False
    ) -> dict[str, torch.Tensor]:
        """Random full-resolution crops of consecutive frames.

        Returns image1, image2 (B, 3, h, w) normalised and flow_init (B, 2, h, w) px (stored initialisation,
        else DIS on the crop); with ground truth, flow (B, 2, h, w) px and valid (B, 1, h, w); with
        ``with_backward_init``, flow_init_backward (initialisation image2 -> image1 on the crop).
        """
        cw, ch = crop
        fields: dict[str, list[NDArray[np.generic]]] = {"image1": [], "image2": [], "flow_init": []}
        for _ in range(batch):
            seq, i = self._pick("", 1)
            h, w = seq.rgb.shape[1:3]
            if h < ch or w < cw:
                raise TrainingDataError(f"crop {cw}x{ch} is larger than the {w}x{h} frames")
            y, x = int(self.rng.integers(h - ch + 1)), int(self.rng.integers(w - cw + 1))
            window = (slice(y, y + ch), slice(x, x + cw))
            a, b = seq.rgb[i][window], seq.rgb[i + 1][window]
            sample = {"flow_init": seq.flow_init[i][window].astype(np.float32) if seq.flow_init is not None
                      else initial_flow(a, b)}
            if with_backward_init:
                sample["flow_init_backward"] = initial_flow(b, a)
            if seq.flow is not None and seq.flow_valid is not None:
                flow = seq.flow[i][window]
                sample["flow"] = np.nan_to_num(flow.astype(np.float32))
                sample["valid"] = (seq.flow_valid[i][window] & np.isfinite(flow).all(-1))[..., None]
            if self.augment:
                a, b = _photometric_jitter(self.rng, [a, b])
                if self.rng.random() < 0.5:
                    a, b = a[:, ::-1], b[:, ::-1]
                    sample = {k: v[:, ::-1] * ([-1, 1] if k.startswith("flow") else 1) for k, v in sample.items()}
            sample.update(image1=a, image2=b)
            for key, value in sample.items():
                fields.setdefault(key, []).append(value)
        out = {}
        for key, values in fields.items():
            tensor = _to_chw(values)
            if key.startswith("image"):
                out[key] = normalize_image_tensor(tensor)
            else:
                out[key] = tensor.float() if key != "valid" else tensor.bool()
        if not all(len(v) == batch for v in fields.values()):
            raise TrainingDataError("some sequences have flow ground truth and others not; use one kind")
        return out

    def pose_batch(self, batch: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Image1, image2 (B, 3, H, W) normalised and twist (B, 6) of T_cam2_cam1 (v m, w rad)."""
        im1, im2, twists = [], [], []
        for _ in range(batch):
            seq, i = self._pick("poses", 1)
            a, b = _resize_rgb(seq.rgb[i], size), _resize_rgb(seq.rgb[i + 1], size)
            poses = np.asarray(seq.poses)
            pose_21 = invert(poses[i + 1]) @ poses[i]
            if self.augment:
                a, b = _photometric_jitter(self.rng, [a, b])
                if self.rng.random() < 0.5:
                    a, b, pose_21 = b, a, invert(pose_21)
            xi = se3_log(pose_21)
            if self.augment and self.rng.random() < 0.5:
                # Mirroring x mirrors the motion: (vx, vy, vz, wx, wy, wz) -> (-vx, vy, vz, wx, -wy, -wz).
                a, b = a[:, ::-1], b[:, ::-1]
                xi = xi * np.array([-1, 1, 1, 1, -1, -1])
            im1.append(a)
            im2.append(b)
            twists.append(xi)
        return {
            "image1": normalize_image_tensor(_to_chw(im1)),
            "image2": normalize_image_tensor(_to_chw(im2)),
            "twist": torch.tensor(np.stack(twists), dtype=torch.float32),
        }

    def triplet_batch(self, batch: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """prev, target, next: (B, 3, H, W) in [0, 1]; *_net: normalised; k (B, 3, 3) at the batch size."""
        frames: dict[str, list[NDArray[np.uint8]]] = {"prev": [], "target": [], "next": []}
        ks = []
        for _ in range(batch):
            seq, i = self._pick("", 2)
            rgbs = [_resize_rgb(seq.rgb[i + j], size) for j in range(3)]
            if self.augment:
                rgbs = _photometric_jitter(self.rng, rgbs)
            for key, rgb in zip(frames, rgbs, strict=True):
                frames[key].append(rgb)
            ks.append(seq.intrinsics.resized(*size).matrix)
        out = {}
        for key, rgbs in frames.items():
            raw = _to_chw(rgbs)
            out[key] = raw.float() / 255.0
            out[f"{key}_net"] = normalize_image_tensor(raw)
        out["k"] = torch.tensor(np.stack(ks), dtype=torch.float32)
        return out
