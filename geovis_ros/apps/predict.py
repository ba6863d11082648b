"""``geovis predict``: run the depth or flow network on image files of any size.

Forms::

    geovis predict depth IMAGE --out OUT.npy [--png OUT.png] [--K fx,fy,cx,cy] [--backend ...]
    geovis predict flow IMAGE1 IMAGE2 --out OUT.flo [--backend ...]

Depth is written as an (H, W) float32 ``.npy`` in metres at the input size (and optionally a
16-bit PNG in millimetres, 0 = invalid). Without ``--K`` the camera is assumed to have the
training cameras' typical field of view: fx = fy = :data:`DEFAULT_HFOV_DEG` horizontally,
principal point at the centre. Flow is written as Middlebury ``.flo`` at the input size.
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
    depth = sub.add_parser("depth", help="metric depth of one image")
    depth.add_argument("image", type=Path, help="input image (any size)")
    depth.add_argument("--out", type=Path, required=True, help="output .npy, float32 metres, (H, W)")
    depth.add_argument("--png", type=Path, default=None, help="also write a 16-bit PNG in millimetres")
    depth.add_argument("--K", dest="k", default=None, help="intrinsics fx,fy,cx,cy in pixels of the input image")
    depth.add_argument("--size", default=None,
                       help="network input WxH (multiples of 16; default: the trained size, aspect kept)")
    flow = sub.add_parser("flow", help="optical flow from IMAGE1 to IMAGE2")
    flow.add_argument("image1", type=Path)
    flow.add_argument("image2", type=Path)
    flow.add_argument("--out", type=Path, required=True, help="output Middlebury .flo")
    for p in (depth, flow):
        p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "tensorrt"), default="torch",
                       help="inference backend (default torch)")
        p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")


def default_intrinsics(width: int, height: int):  # noqa: ANN201
    """Intrinsics with a :data:`DEFAULT_HFOV_DEG` horizontal field of view, square pixels, centred."""
    from geovis_ros.geometry.camera import Intrinsics

    fx = 0.5 * width / math.tan(math.radians(DEFAULT_HFOV_DEG) / 2.0)
    return Intrinsics(fx, fx, (width - 1) / 2.0, (height - 1) / 2.0, width, height)


def _engine_infer(name: str, width: int, height: int, backend: str, device: str):  # noqa: ANN202
    from geovis_ros.inference.engine import EngineConfig, InferenceError
    from geovis_ros.inference.registry import get_spec
    from geovis_ros.inference.select import create_engine

    try:
        engine = create_engine(get_spec(name), height, width, EngineConfig(backend=backend, device=device))
    except (InferenceError, ValueError) as err:
        raise CommandError(f"cannot run the {name} network with backend {backend}: {err}") from err
    return engine.infer


def _predict_depth(args: argparse.Namespace) -> None:
    from geovis_ros.data.calibration import load_calibration
    from geovis_ros.data.image_io import read_rgb, write_depth_png
    from geovis_ros.inference.registry import MODEL_INFO
    from geovis_ros.models.depth import DEPTH_MULTIPLE, network_size_for, run_depth

    rgb = read_rgb(args.image)
    h, w = rgb.shape[:2]
    intrinsics = load_calibration(args.k).intrinsics(w, h, "--K") if args.k else default_intrinsics(w, h)
    if args.size:
        try:
            net_w, net_h = (int(v) for v in args.size.lower().split("x"))
        except ValueError as err:
            raise CommandError(f"--size must look like 192x144, got {args.size!r}") from err
        if net_w <= 0 or net_h <= 0 or net_w % DEPTH_MULTIPLE or net_h % DEPTH_MULTIPLE:
            raise CommandError(f"--size must be positive multiples of {DEPTH_MULTIPLE}, got {args.size}")
    else:
        net_w, net_h = network_size_for(intrinsics, MODEL_INFO["depth"].default_size[0])
    infer = _engine_infer("depth", net_w, net_h, args.backend, args.device)
    depth, _ = run_depth(infer, rgb, intrinsics, (net_w, net_h))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, depth)
    if args.png:
        write_depth_png(args.png, depth)
    print(f"depth {w}x{h} -> {args.out}: median {float(np.nanmedian(depth)):.3f} m, "
          f"range {float(np.nanmin(depth)):.3f}..{float(np.nanmax(depth)):.3f} m")


def _predict_flow(args: argparse.Namespace) -> None:
    from geovis_ros.data.image_io import read_rgb, write_flo
    from geovis_ros.models.flow import FLOW_MULTIPLE, run_flow

    rgb1, rgb2 = read_rgb(args.image1), read_rgb(args.image2)
    if rgb1.shape != rgb2.shape:
        raise CommandError(f"the two images differ in size: {rgb1.shape[1::-1]} and {rgb2.shape[1::-1]}")
    h, w = rgb1.shape[:2]
    net_w, net_h = -(-w // FLOW_MULTIPLE) * FLOW_MULTIPLE, -(-h // FLOW_MULTIPLE) * FLOW_MULTIPLE
    flow = run_flow(_engine_infer("flow", net_w, net_h, args.backend, args.device), rgb1, rgb2)
    write_flo(args.out, flow)
    magnitude = np.linalg.norm(flow, axis=-1)
    print(f"flow {w}x{h} -> {args.out}: mean |flow| {float(magnitude.mean()):.2f} px, "
          f"max {float(magnitude.max()):.2f} px")


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
