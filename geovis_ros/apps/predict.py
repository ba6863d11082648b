"""``geovis predict``: run a depth or flow network (shipped, or any ONNX with its model card) on image files.

Forms::

    geovis predict depth IMAGE --out OUT.npy [--png OUT.png] [--K fx,fy,cx,cy] [--model FILE] [--card NAME|FILE]
    geovis predict flow IMAGE1 IMAGE2 --out OUT.flo [--model FILE] [--card NAME|FILE]

The same card-driven stages as the pipeline run the network (``DepthStage``, ``FlowStage``).
Depth is written as an (H, W) float32 ``.npy`` at the input size: metres for a metric model, a
relative depth (median 1) otherwise; optionally a 16-bit PNG in millimetres, 0 = invalid, for a
metric model. Without ``--K`` the camera is assumed to have the training cameras' typical field
of view: fx = fy = :data:`DEFAULT_HFOV_DEG` horizontally, principal point at the centre. Flow is
written as Middlebury ``.flo`` at the input size.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from geovis_ros.errors import CommandError

DEFAULT_HFOV_DEG = 70.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands ``depth`` and ``flow``."""
    sub = parser.add_subparsers(dest="kind", required=True, metavar="{depth,flow}")
    depth = sub.add_parser("depth", help="depth of one image")
    depth.add_argument("image", type=Path, help="input image (any size)")
    depth.add_argument("--out", type=Path, required=True,
                       help="output .npy, float32 (H, W): metres (metric model) or relative depth")
    depth.add_argument("--png", type=Path, default=None, help="also write a 16-bit PNG in millimetres (metric only)")
    depth.add_argument("--K", dest="k", default=None, help="intrinsics fx,fy,cx,cy in pixels of the input image")
    depth.add_argument("--size", default=None, type=int,
                       help="network input width, px (cards without a fixed size or pixel area; default: the "
                            "card's upstream width, else the image width)")
    flow = sub.add_parser("flow", help="optical flow from IMAGE1 to IMAGE2")
    flow.add_argument("image1", type=Path)
    flow.add_argument("image2", type=Path)
    flow.add_argument("--out", type=Path, required=True, help="output Middlebury .flo")
    flow.add_argument("--size", default=None, type=int, help="network input width, px (default as for depth)")
    for p in (depth, flow):
        p.add_argument("--model", default="", help="network file (.onnx or .safetensors); default: the shipped one")
        p.add_argument("--card", default="",
                       help="model card: a preset name (geovis models) or a YAML file; default: <model>.yaml "
                            "beside the ONNX, else the shipped card")
        p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "tensorrt"), default="auto",
                       help="inference backend (default auto)")
        p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
        p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                       help="network precision on GPU (default fp32)")


def default_intrinsics(width: int, height: int):  # noqa: ANN201
    """Intrinsics with a :data:`DEFAULT_HFOV_DEG` horizontal field of view, square pixels, centred."""
    from geovis_ros.geometry.camera import Intrinsics

    fx = 0.5 * width / math.tan(math.radians(DEFAULT_HFOV_DEG) / 2.0)
    return Intrinsics(fx, fx, (width - 1) / 2.0, (height - 1) / 2.0, width, height)


def _stage(task: str, args: argparse.Namespace, image_width: int):  # noqa: ANN202 - DepthStage | FlowStage
    """The pipeline's card-driven stage for ``task`` as the flags say; failures become CommandError."""
    from geovis_ros.inference.engine import EngineConfig, InferenceError
    from geovis_ros.models.cards import card_for_model
    from geovis_ros.pipeline.networks import DepthStage, FlowStage, NetworkConfig

    try:
        card = card_for_model(task, args.model, args.card)
        if args.size is not None and args.size <= 0:
            raise ValueError(f"--size must be a positive width in pixels, got {args.size}")
        width = args.size or card.size.width or image_width
        config = NetworkConfig(engine=EngineConfig(backend=args.backend, device=args.device, precision=args.precision),
                               input_width=width, model_path=args.model, card=args.card)
        return (DepthStage if task == "depth" else FlowStage)(config)
    except (InferenceError, ValueError, OSError) as err:
        raise CommandError(f"cannot run the {task} network: {err}") from err


def _predict_depth(args: argparse.Namespace) -> None:
    from geovis_ros.data.calibration import load_calibration
    from geovis_ros.data.image_io import read_rgb, write_depth_png
    from geovis_ros.frame import Frame

    rgb = read_rgb(args.image)
    h, w = rgb.shape[:2]
    intrinsics = load_calibration(args.k).intrinsics(w, h, "--K") if args.k else default_intrinsics(w, h)
    stage = _stage("depth", args, w)
    result = stage(Frame(0, rgb, intrinsics))
    depth = result.depth
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, depth)
    unit = "m" if result.is_metric else "(relative)"
    if args.png:
        if not result.is_metric:
            raise CommandError(f"--png writes millimetres; the {stage.model.card.key} model gives relative depth")
        write_depth_png(args.png, depth)
    print(f"depth {w}x{h} -> {args.out} ({stage.model.card.key}, {stage.describe().get('depth_backend')}): "
          f"median {float(np.nanmedian(depth)):.3f} {unit}, "
          f"range {float(np.nanmin(depth)):.3f}..{float(np.nanmax(depth)):.3f} {unit}")


def _predict_flow(args: argparse.Namespace) -> None:
    from geovis_ros.data.image_io import read_rgb, write_flo
    from geovis_ros.frame import Frame

    rgb1, rgb2 = read_rgb(args.image1), read_rgb(args.image2)
    if rgb1.shape != rgb2.shape:
        raise CommandError(f"the two images differ in size: {rgb1.shape[1::-1]} and {rgb2.shape[1::-1]}")
    h, w = rgb1.shape[:2]
    k = default_intrinsics(w, h)
    stage = _stage("flow", args, w)
    stage(Frame(0, rgb1, k))
    result = stage(Frame(1, rgb2, k))
    assert result is not None  # the second frame of a stream always has flow
    write_flo(args.out, result.flow)
    magnitude = np.linalg.norm(result.flow, axis=-1)
    print(f"flow {w}x{h} -> {args.out} ({stage.model.card.key}, {stage.describe().get('flow_backend')}): "
          f"mean |flow| {float(np.nanmean(magnitude)):.2f} px, max {float(np.nanmax(magnitude)):.2f} px")


def run(args: argparse.Namespace) -> int:
    """Predict and write the output files; bad inputs become :class:`CommandError`."""
    from geovis_ros.data.image_io import DatasetError
    from geovis_ros.models.blocks import ModelInputError

    try:
        if args.kind == "depth":
            _predict_depth(args)
        else:
            _predict_flow(args)
    except (DatasetError, ModelInputError) as err:
        raise CommandError(str(err)) from err
    return 0
