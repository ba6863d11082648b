"""Training loops for the depth, flow and pose networks: supervised (synthetic world) and self-supervised.

One loop, :func:`train`, drives every task: it builds the networks, the data, the optimiser
(Adam, warm-up then cosine decay), and runs ``steps`` steps with a tqdm progress bar, a CSV log
(``log.csv``), periodic resumable checkpoints (``checkpoint.pt``: networks, optimiser, step, torch
and numpy RNG states, loaded back with ``weights_only=True``) and safetensors weights
(``<network>.safetensors``, the shipped format) in ``out_dir``.

Tasks and what they optimise:
- ``depth`` supervised: per scale, berHu on log depth + scale-invariant log loss (Eigen) against the
  canonical-focal target, plus a Gaussian NLL of ln(depth) for the log-variance head (mean detached,
  so the uncertainty never pulls the depth).
- ``flow`` supervised: multi-scale EPE of the refined flows.
- ``pose`` supervised: L1 on the twist of T_cam2_cam1 (rotation weighted).
- ``depth``/``pose`` self-supervised (monodepth2): depth and pose networks together, minimum
  reprojection SSIM + L1 over the previous and next frames with auto-masking, edge-aware smoothness.
- ``flow`` self-supervised: photometric SSIM + L1 of image2 warped by the flow, occlusions masked by the
  forward-backward consistency test, edge-aware flow smoothness.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from geovis_ros.errors import GeovisError
from geovis_ros.inference.registry import load_shipped
from geovis_ros.models.blocks import IMAGE_MEAN, IMAGE_STD
from geovis_ros.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, save_weights
from geovis_ros.models.depth import CANONICAL_FX, DepthNet, canonical_depth_target
from geovis_ros.models.flow import FlowRefineNet, forward_backward_consistency
from geovis_ros.models.pose import PoseNet, twist_to_matrix
from geovis_ros.training import losses
from geovis_ros.training.datasets import (
    Batcher,
    CacheFolder,
    SequenceArrays,
    SynthStream,
    TrainingDataError,
    is_cache,
    load_cache,
    load_recording,
)

TASKS = ("depth", "flow", "pose")
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
DEPTH_SCALE_WEIGHTS = (0.125, 0.25, 0.5, 1.0)
FLOW_SCALE_WEIGHTS = (0.25, 0.5, 1.0)  # outputs after the 1/8, 1/4 and 1/2 levels
# Optional arrays each kind of run reads from a cache (the rest stays on disk).
TASK_FIELDS = {"depth": ("depth",), "pose": ("poses",), "flow": ("flow", "flow_valid", "flow_init"), "self": ()}
NETWORKS: dict[str, Callable[[], nn.Module]] = {"depth": DepthNet, "flow": FlowRefineNet, "pose": PoseNet}


class TrainingError(GeovisError, RuntimeError):
    """A training run cannot start or continue (bad configuration, incompatible checkpoint)."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        task: ``depth`` | ``flow`` | ``pose``.
        out_dir: checkpoint, weights and log folder.
        steps: total optimiser steps (a resumed run continues up to this count).
        batch: samples per step.
        size: (width, height) of training samples (a crop for flow, a resize for depth and pose).
        data: ``synth`` (rendered on the fly) or a path: a pre-rendered cache folder
            (``geovis train --prerender``) or any recording ``open_sequence`` reads.
        self_supervised: photometric training (no ground truth needed).
        seed: seeds torch and numpy; the same seed and data give the same run.
        device: ``cpu`` or ``cuda``.
        lr: peak Adam learning rate.
        resume: continue from ``out_dir/checkpoint.pt`` if present.
        init: ``none`` (random), ``shipped`` (the shipped weights) or a safetensors path to start from.
        checkpoint_every: steps between checkpoints.
        render_size: (width, height) of on-the-fly synthetic frames.
        synth_frames: frames per on-the-fly synthetic sequence.
        synth_pool: sequences kept in memory when rendering on the fly.
        refresh_every: batches between two newly rendered sequences.
        max_frames: frames read from a recording.
        threads: torch CPU threads (0 = torch's default).
        val_data: a pre-rendered cache of held-out sequences, scored at every checkpoint (``val.csv``).
        val_stride: score every n-th frame of the validation sequences.

    """

    task: str
    out_dir: Path
    steps: int = 1000
    batch: int = 8
    size: tuple[int, int] = (192, 144)
    data: str = "synth"
    self_supervised: bool = False
    seed: int = 0
    device: str = "cpu"
    lr: float = 1e-3
    resume: bool = False
    init: str = "none"
    checkpoint_every: int = 200
    render_size: tuple[int, int] = (320, 240)
    synth_frames: int = 12
    synth_pool: int = 8
    refresh_every: int = 50
    max_frames: int = 2000
    threads: int = 0
    val_data: Path | None = None
    val_stride: int = 4

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise TrainingError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.steps < 1 or self.batch < 1 or self.checkpoint_every < 1:
            raise TrainingError("steps, batch and checkpoint_every must be >= 1")
        if self.device not in ("cpu", "cuda"):
            raise TrainingError(f"device must be cpu or cuda, got {self.device!r}")
        multiple = 16
        if any(s % multiple or s <= 0 for s in self.size):
            raise TrainingError(f"size {self.size[0]}x{self.size[1]} must be positive multiples of {multiple}")

    @property
    def networks(self) -> tuple[str, ...]:
        """Networks this run trains (self-supervised depth and pose train both together)."""
        if self.self_supervised and self.task in ("depth", "pose"):
            return ("depth", "pose")
        return (self.task,)


def _denormalize(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGE_MEAN, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=image.device).view(1, 3, 1, 1)
    return (image * std + mean).clamp(0, 1)


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return torch.nn.functional.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def depth_supervised_loss(model: DepthNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Multi-scale berHu(log) + SI-log + NLL(log_var) loss against the canonical-focal target."""
    target = canonical_depth_target(batch["depth"], batch["fx"]).clamp_min(1e-3)
    log_target = torch.log(target)
    valid = batch["valid"]
    total = target.new_zeros(())
    parts = {"berhu": 0.0, "silog": 0.0, "nll": 0.0}
    for weight, (log_depth, log_var) in zip(DEPTH_SCALE_WEIGHTS, model.forward_multiscale(batch["image"]), strict=True):
        log_depth, log_var = _upsample_to(log_depth, target), _upsample_to(log_var, target)
        berhu = losses.berhu_loss(log_depth, log_target, valid)
        silog = losses.silog_loss(torch.exp(log_depth), target, valid)
        nll = losses.gaussian_nll(log_depth.detach(), log_target, log_var, valid)
        total = total + weight * (berhu + silog + 0.1 * nll)
        parts = {"berhu": berhu.item(), "silog": silog.item(), "nll": nll.item()}
    return total, parts


def flow_supervised_loss(model: FlowRefineNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Multi-scale EPE of the refined flows; also reports the full-resolution EPE of the init and output."""
    if "flow" not in batch:
        raise TrainingDataError("supervised flow training needs ground-truth flow; use --self-supervised")
    flows = model.forward_multiscale(batch["image1"], batch["image2"], batch["flow_init"])
    loss = losses.multiscale_epe(flows, batch["flow"], batch["valid"], list(FLOW_SCALE_WEIGHTS))
    with torch.no_grad():
        epe = losses.endpoint_error(flows[-1], batch["flow"], batch["valid"]).item()
        epe_init = losses.endpoint_error(batch["flow_init"], batch["flow"], batch["valid"]).item()
    return loss, {"epe": epe, "epe_init": epe_init}


def pose_supervised_loss(model: PoseNet, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 twist loss of T_cam2_cam1."""
    pred = model(batch["image1"], batch["image2"])
    loss = losses.twist_loss(pred, batch["twist"])
    with torch.no_grad():
        t_err = (pred[:, :3] - batch["twist"][:, :3]).norm(dim=1).mean().item()
        r_err = (pred[:, 3:] - batch["twist"][:, 3:]).norm(dim=1).mean().item()
    return loss, {"t_err_m": t_err, "r_err_rad": r_err}


def depth_pose_self_supervised_loss(
    depth_net: DepthNet, pose_net: PoseNet, batch: dict[str, torch.Tensor], smoothness: float = 1e-3
) -> tuple[torch.Tensor, dict[str, float]]:
    """monodepth2 loss for the target frame from the previous and next frames."""
    target, k = batch["target"], batch["k"]
    sources = [batch["prev"], batch["next"]]
    # T_source_target = pose_net(target, source): maps target-camera points into the source camera.
    poses = [twist_to_matrix(pose_net(batch["target_net"], batch[f"{name}_net"])) for name in ("prev", "next")]
    fx = k[:, 0, 0].view(-1, 1, 1, 1)
    total = target.new_zeros(())
    photometric, automask = 0.0, 0.0
    for level, (weight, (log_depth, _)) in enumerate(
        zip(DEPTH_SCALE_WEIGHTS, depth_net.forward_multiscale(batch["target_net"]), strict=True)
    ):
        depth = _upsample_to(torch.exp(log_depth), target) * (fx / CANONICAL_FX)
        warped = [losses.inverse_warp(src, depth, k, pose)[0] for src, pose in zip(sources, poses, strict=True)]
        photo, mask = losses.min_reprojection_loss(target, warped, sources)
        disparity = torch.exp(-log_depth)
        scaled_image = torch.nn.functional.interpolate(target, size=disparity.shape[-2:], mode="area")
        smooth = losses.edge_aware_smoothness(disparity, scaled_image) / (2 ** (len(DEPTH_SCALE_WEIGHTS) - 1 - level))
        total = total + weight * photo + smoothness * smooth
        photometric, automask = photo.item(), mask.float().mean().item()
    return total, {"photometric": photometric, "automask": automask}


def flow_self_supervised_loss(
    model: FlowRefineNet, batch: dict[str, torch.Tensor], smoothness: float = 0.05
) -> tuple[torch.Tensor, dict[str, float]]:
    """Photometric flow loss with forward-backward occlusion masking and edge-aware smoothness."""
    flow_fw = model(batch["image1"], batch["image2"], batch["flow_init"])
    with torch.no_grad():
        flow_bw = model(batch["image2"], batch["image1"], batch["flow_init_backward"])
        occlusion_free = forward_backward_consistency(flow_fw, flow_bw)
    image1, image2 = _denormalize(batch["image1"]), _denormalize(batch["image2"])
    photo = losses.flow_photometric_loss(image1, image2, flow_fw, occlusion_free)
    smooth = losses.edge_aware_smoothness(flow_fw / 20.0, image1, normalize=False)
    consistent = occlusion_free.float().mean().item()
    return photo + smoothness * smooth, {"photometric": photo.item(), "consistent": consistent}


def _load_sequences(
    config: TrainConfig, rng: np.random.Generator
) -> tuple[list[SequenceArrays], SynthStream | CacheFolder | None]:
    """The training sequences and, for sources that grow, the object whose ``refresh()`` updates them."""
    if config.data == "synth":
        width, height = config.render_size
        stream = SynthStream(rng, width, height, config.synth_frames, config.synth_pool, config.refresh_every)
        return stream.sequences, stream
    path = Path(config.data)
    if not path.exists():
        raise TrainingDataError(f"training data {path} does not exist (use 'synth' or a folder, video or bag)")
    if path.is_dir() and is_cache(path):
        cache = CacheFolder(path, TASK_FIELDS["self" if config.self_supervised else config.task])
        return cache.sequences, cache
    width, height = config.render_size if config.task == "flow" else config.size
    return [load_recording(path, config.max_frames, width, height, with_flow_init=config.task == "flow")], None


def _draw_batch(config: TrainConfig, batcher: Batcher) -> dict[str, torch.Tensor]:
    if config.self_supervised and config.task in ("depth", "pose"):
        return batcher.triplet_batch(config.batch, config.size)
    if config.task == "depth":
        return batcher.depth_batch(config.batch, config.size)
    if config.task == "pose":
        return batcher.pose_batch(config.batch, config.size)
    return batcher.flow_batch(config.batch, config.size, with_backward_init=config.self_supervised)


def _step_loss(
    config: TrainConfig, nets: dict[str, nn.Module], batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    depth_net, flow_net, pose_net = (cast(DepthNet, nets.get("depth")), cast(FlowRefineNet, nets.get("flow")),
                                     cast(PoseNet, nets.get("pose")))
    if config.self_supervised:
        if config.task == "flow":
            return flow_self_supervised_loss(flow_net, batch)
        return depth_pose_self_supervised_loss(depth_net, pose_net, batch)
    if config.task == "depth":
        return depth_supervised_loss(depth_net, batch)
    if config.task == "flow":
        return flow_supervised_loss(flow_net, batch)
    return pose_supervised_loss(pose_net, batch)


def learning_rate(step: int, total: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``peak`` to ``peak / 20``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _build_networks(config: TrainConfig, device: torch.device) -> dict[str, nn.Module]:
    nets = {}
    for name in config.networks:
        net = NETWORKS[name]()
        if config.init == "shipped":
            load_shipped(name, net, required=True)
        elif config.init != "none":
            from geovis_ros.models.checkpoint import load_weights_into

            load_weights_into(net, Path(config.init) / f"{name}.safetensors" if Path(config.init).is_dir()
                              else Path(config.init))
        nets[name] = net.to(device).train()
    return nets


def _save(config: TrainConfig, nets: dict[str, nn.Module], optimizer: torch.optim.Optimizer, step: int,
          rng: np.random.Generator) -> None:
    state = {
        "task": config.task,
        "networks": {name: net.state_dict() for name, net in nets.items()},
        "optimizer": optimizer.state_dict(),
        "step": step,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": rng.bit_generator.state,
    }
    save_checkpoint(config.out_dir / CHECKPOINT_NAME, state)
    for name, net in nets.items():
        save_weights(net, config.out_dir / f"{name}.safetensors", {
            "network": name, "task": config.task, "step": str(step),
            "self_supervised": str(config.self_supervised), "size": f"{config.size[0]}x{config.size[1]}",
            "canonical_fx": str(CANONICAL_FX),
        })


def validate(config: TrainConfig, nets: dict[str, nn.Module], sequences: list[SequenceArrays]) -> dict[str, float]:
    """Held-out metrics of the networks this run trains (see :mod:`geovis_ros.training.validate`)."""
    from geovis_ros.training import validate as val

    scores: dict[str, float] = {}
    for name, net in nets.items():
        net.eval()
        if name == "depth":
            scores.update(val.depth_metrics(net, sequences, config.size, config.val_stride))
        elif name == "flow":
            scores.update(val.flow_metrics(net, sequences, config.val_stride))
        else:
            scores.update(val.pose_metrics(net, sequences, config.size, config.val_stride))
        net.train()
    return scores


def _append_csv(path: Path, row: dict[str, float]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def train(config: TrainConfig, progress: bool = True) -> dict[str, float]:
    """Run (or resume) one training run; returns the last step's loss terms."""
    from tqdm import tqdm

    if config.threads:
        torch.set_num_threads(config.threads)
    if config.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was requested but no CUDA device is available")
    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    config.out_dir.mkdir(parents=True, exist_ok=True)

    nets = _build_networks(config, device)
    params = [p for net in nets.values() for p in net.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    start = 0
    checkpoint_path = config.out_dir / CHECKPOINT_NAME
    if config.resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        if state.get("task") != config.task or set(state.get("networks", {})) != set(nets):
            raise TrainingError(f"{checkpoint_path} is for task {state.get('task')!r} with networks "
                                f"{sorted(state.get('networks', {}))}, not {config.task!r} {sorted(nets)}")
        try:
            for name, net in nets.items():
                net.load_state_dict(state["networks"][name])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{checkpoint_path} does not fit this run: {err}") from err
        start = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = state["numpy_rng"]

    sequences, stream = _load_sequences(config, rng)
    val_sequences = load_cache(config.val_data) if config.val_data is not None else []
    batcher = Batcher(sequences, rng)
    log_path = config.out_dir / LOG_NAME
    new_log = not (config.resume and log_path.is_file() and start > 0)
    parts: dict[str, float] = {}
    with open(log_path, "w" if new_log else "a", newline="") as log_file:
        writer: csv.DictWriter | None = None
        bar = tqdm(range(start, config.steps), initial=start, total=config.steps, disable=not progress,
                   desc=f"train {config.task}")
        t0 = time.monotonic()
        for step in bar:
            lr = learning_rate(step, config.steps, config.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = {k: v.to(device) for k, v in _draw_batch(config, batcher).items()}
            loss, parts = _step_loss(config, nets, batch)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at step {step}; lower --lr or check the data")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            optimizer.step()
            if stream is not None:
                stream.refresh()
                batcher.sequences = stream.sequences
            row = {"step": step + 1, "loss": loss.item(), "lr": lr, "seconds": time.monotonic() - t0, **parts}
            if writer is None:
                writer = csv.DictWriter(log_file, fieldnames=list(row))
                if new_log:
                    writer.writeheader()
            writer.writerow(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "seconds")})
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                log_file.flush()
                _save(config, nets, optimizer, step + 1, rng)
                if val_sequences:
                    _append_csv(config.out_dir / "val.csv", {"step": step + 1, **validate(config, nets, val_sequences)})
    return parts
