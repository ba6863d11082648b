"""``geovis train``: train or fine-tune the depth, flow and pose networks; pre-render training data.

Forms::

    geovis train depth|flow|pose [--data synth|PATH] [--steps N] [--batch B] [--size WxH] [--out DIR]
                                 [--resume] [--self-supervised] [--seed S] [--device cpu|cuda] ...
    geovis train prerender --out DIR [--split train|val] [--sequences N] [--frames F] [--size WxH]
    geovis train evaluate depth|flow|pose --data DIR [--weights DIR] [--size WxH] [--stride N]

``--data synth`` renders training sequences on the fly (training scenes and seeds only);
``--data DIR`` reads a folder written by ``geovis train prerender`` or any recording that
``geovis_ros.data.readers.open_sequence`` opens (video, image folder, bag) — recordings have
no ground truth, so they need ``--self-supervised``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geovis_ros.errors import CommandError

DEFAULT_SIZES = {"depth": (192, 144), "pose": (192, 144), "flow": (128, 96)}


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"size must look like 192x144, got {text!r}") from err
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands ``depth``, ``flow``, ``pose`` (train) and ``prerender``."""
    sub = parser.add_subparsers(dest="task", required=True, metavar="{depth,flow,pose,prerender,evaluate}")
    for task in ("depth", "flow", "pose"):
        p = sub.add_parser(task, help=f"train the {task} network")
        p.add_argument("--data", default="synth", help="'synth' (on the fly), a prerendered folder, or a recording")
        p.add_argument("--steps", type=int, default=1000, help="total optimiser steps (default 1000)")
        p.add_argument("--batch", type=int, default=8, help="samples per step (default 8)")
        default_w, default_h = DEFAULT_SIZES[task]
        p.add_argument("--size", type=_size, default=None,
                       help=f"sample size WxH, multiples of 16 (default {default_w}x{default_h}"
                       f"{'; a crop' if task == 'flow' else ''})")
        p.add_argument("--out", type=Path, default=None, help=f"output folder (default out/train_{task})")
        p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
        p.add_argument("--self-supervised", action="store_true",
                       help="photometric training without ground truth (depth/pose: both networks together)")
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="training device (default cpu)")
        p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
        p.add_argument("--init", default=None,
                       help="start from: none, shipped, or a .safetensors file/folder "
                       "(default: shipped when --self-supervised, else none)")
        p.add_argument("--checkpoint-every", type=int, default=200, help="steps between checkpoints (default 200)")
        p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
        p.add_argument("--val", type=Path, default=None, help="prerendered held-out folder scored at each checkpoint")
        p.add_argument("--val-stride", type=int, default=4, help="score every n-th validation frame (default 4)")
        p.add_argument("--render-size", type=_size, default=(320, 240),
                       help="frame size WxH for --data synth and for recordings in flow training (default 320x240)")
        p.add_argument("--synth-frames", type=int, default=12, help="frames per on-the-fly sequence (default 12)")
        p.add_argument("--synth-pool", type=int, default=8, help="on-the-fly sequences held in memory (default 8)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    p = sub.add_parser("prerender", help="render synthetic training or validation sequences to a folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    p.add_argument("--split", choices=("train", "val"), default="train",
                   help="train: training scenes/seeds; val: held-out seeds, all scenes incl. corridor")
    p.add_argument("--sequences", type=int, default=100, help="number of sequences (default 100)")
    p.add_argument("--frames", type=int, default=12, help="frames per sequence (default 12)")
    p.add_argument("--size", type=_size, default=(320, 240), help="frame size WxH (default 320x240)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--scene", action="append", choices=("room", "corridor", "street", "tabletop"), default=None,
                   help="restrict to this scene type (repeatable); corridor is only allowed with --split val")
    p.add_argument("--worker", default="0/1", help="K/N: render only shards i with i %% N == K (parallel renders)")


    p = sub.add_parser("evaluate", help="score trained weights on a prerendered (held-out) folder")
    p.add_argument("networks", nargs="+", choices=("depth", "flow", "pose"), help="networks to score")
    p.add_argument("--data", type=Path, required=True, help="folder written by 'geovis train prerender'")
    p.add_argument("--weights", type=Path, default=None,
                   help="folder with <network>.safetensors (default: the shipped weights)")
    p.add_argument("--size", type=_size, default=None, help="network input WxH for depth and pose (default: trained)")
    p.add_argument("--stride", type=int, default=1, help="score every n-th frame (default 1)")


def _evaluate(args: argparse.Namespace) -> None:
    import time

    from geovis_ros.inference.registry import MODEL_INFO, build_model
    from geovis_ros.models.checkpoint import load_weights_into
    from geovis_ros.training import validate
    from geovis_ros.training.datasets import load_cache

    sequences = load_cache(args.data)
    for name in args.networks:
        model = build_model(name, pretrained=args.weights is None)
        if args.weights is not None:
            load_weights_into(model, args.weights / f"{name}.safetensors")
        size = args.size or MODEL_INFO[name].default_size
        start = time.perf_counter()
        if name == "depth":
            scores = validate.depth_metrics(model, sequences, size, args.stride)
        elif name == "flow":
            scores = validate.flow_metrics(model, sequences, args.stride)
        else:
            scores = validate.pose_metrics(model, sequences, size, args.stride)
        elapsed = time.perf_counter() - start
        print(f"{name} on {args.data} ({len(sequences)} sequences, stride {args.stride}, {elapsed:.0f} s):")
        for key, value in scores.items():
            print(f"  {key:<34}{value:.4f}")


def run(args: argparse.Namespace) -> int:
    """Run the chosen sub-command; user errors become :class:`CommandError`."""
    from geovis_ros.models.checkpoint import CheckpointError
    from geovis_ros.training.datasets import TrainingDataError, write_synth_cache
    from geovis_ros.training.loop import TrainConfig, TrainingError, train

    try:
        if args.task == "evaluate":
            _evaluate(args)
            return 0
        if args.task == "prerender":
            if args.sequences < 1 or args.frames < 2:
                raise CommandError("--sequences must be >= 1 and --frames >= 2")
            try:
                worker = tuple(int(v) for v in args.worker.split("/"))
            except ValueError as err:
                raise CommandError(f"--worker must look like 0/2, got {args.worker!r}") from err
            if len(worker) != 2 or not 0 <= worker[0] < worker[1]:
                raise CommandError(f"--worker must be K/N with 0 <= K < N, got {args.worker!r}")
            width, height = args.size
            paths = write_synth_cache(args.out, args.split, args.sequences, args.frames, width, height, args.seed,
                                      (worker[0], worker[1]), args.scene)
            print(f"{len(paths)} sequences in {args.out}")
            return 0
        config = TrainConfig(
            task=args.task,
            out_dir=args.out or Path("out") / f"train_{args.task}",
            steps=args.steps,
            batch=args.batch,
            size=args.size or DEFAULT_SIZES[args.task],
            data=args.data,
            self_supervised=args.self_supervised,
            seed=args.seed,
            device=args.device,
            lr=args.lr,
            resume=args.resume,
            init=args.init or ("shipped" if args.self_supervised else "none"),
            checkpoint_every=args.checkpoint_every,
            render_size=args.render_size,
            synth_frames=args.synth_frames,
            synth_pool=args.synth_pool,
            threads=args.threads,
            val_data=args.val,
            val_stride=args.val_stride,
        )
        parts = train(config, progress=not args.no_progress)
    except (TrainingError, TrainingDataError, CheckpointError) as err:
        raise CommandError(str(err)) from err
    summary = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
    print(f"trained {'+'.join(config.networks)} to step {config.steps} in {config.out_dir}: {summary}")
    return 0
