"""``geovis dataset synth|preview|bench``: synthetic sequences with exact ground truth.

- ``geovis dataset synth --out DIR [--scene room] [--trajectory handheld] [--frames 300]
  [--size 320x240] [--seed 0] [--fps 30] [--hfov 70] [--moving-objects N] [--lighting]
  [--texture-dir D] [--no-flow] [--bag [--bag-format sqlite3|mcap] [--bag-depth]] [--force]``
  writes a TUM RGB-D style folder (layout: :mod:`geovis_ros.data.tum`) and with ``--bag`` also a
  ROS 2 bag in ``DIR/bag`` (topics: :func:`geovis_ros.data.bag.write_bag`).
- ``geovis dataset preview --out PNG [scene options] [--rows 4]``: a contact sheet of a few
  frames: RGB, depth, flow (Middlebury colours) and the flow validity mask.
- ``geovis dataset bench [scene options]``: render time and frames/s of one sequence.
"""

from __future__ import annotations

import argparse
import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.errors import CommandError

_QUEUE_FRAMES = 4  # frames in flight between the renderer and the bag writer thread


def _image_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) <= 0 or int(height) <= 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 320x240, got {text!r}")
    return int(width), int(height)


def _add_scene_options(parser: argparse.ArgumentParser, frames: int) -> None:
    from geovis_ros.synthetic.scenes import SCENES
    from geovis_ros.synthetic.trajectories import TRAJECTORY_KINDS

    parser.add_argument("--scene", choices=SCENES, default="room", help="scene (default: room)")
    parser.add_argument("--trajectory", choices=TRAJECTORY_KINDS, default="handheld",
                        help="camera motion (default: handheld)")
    parser.add_argument("--frames", type=int, default=frames, help=f"number of frames (default: {frames})")
    parser.add_argument("--size", type=_image_size, default=(320, 240), metavar="WxH",
                        help="image size in pixels (default: 320x240)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate in Hz (default: 30)")
    parser.add_argument("--hfov", type=float, default=70.0, metavar="DEG",
                        help="horizontal field of view in degrees (default: 70)")
    parser.add_argument("--moving-objects", type=int, default=0, metavar="N",
                        help="independently moving objects (default: 0)")
    parser.add_argument("--lighting", action="store_true", help="vary exposure and light direction over time")
    parser.add_argument("--texture-dir", type=Path, metavar="DIR", help="folder of images used as extra textures")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands ``synth``, ``preview`` and ``bench``."""
    sub = parser.add_subparsers(dest="dataset_command", required=True, metavar="{synth,preview,bench}")
    synth = sub.add_parser(
        "synth", help="render a synthetic sequence to a TUM-style folder (and a ROS 2 bag)",
        description="Render a synthetic sequence with exact depth, poses and optical flow.",
    )
    synth.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    _add_scene_options(synth, frames=300)
    synth.add_argument("--no-flow", action="store_true", help="skip the optical flow (faster)")
    synth.add_argument("--bag", action="store_true", help="also write a ROS 2 bag to DIR/bag")
    synth.add_argument("--bag-format", choices=("sqlite3", "mcap"), default="sqlite3",
                       help="bag storage (default: sqlite3)")
    synth.add_argument("--bag-depth", action="store_true", help="also put the depth images in the bag")
    synth.add_argument("--force", action="store_true", help="write into DIR even if it is not empty")

    preview = sub.add_parser("preview", help="contact sheet PNG: RGB, depth, flow, flow validity",
                             description="Render a short sequence and write a contact sheet of a few frames.")
    preview.add_argument("--out", type=Path, required=True, metavar="PNG", help="output PNG file")
    _add_scene_options(preview, frames=60)
    preview.add_argument("--rows", type=int, default=4, help="frames shown, evenly spaced (default: 4)")

    bench = sub.add_parser("bench", help="time the renderer (frames/s)",
                           description="Render one sequence with flow and print the timing.")
    _add_scene_options(bench, frames=300)


def _config(args: argparse.Namespace) -> Any:
    from geovis_ros.synthetic.scenes import SynthConfig, SynthConfigError

    width, height = args.size
    try:
        return SynthConfig(
            scene=args.scene, trajectory=args.trajectory, frames=args.frames, width=width, height=height,
            seed=args.seed, fps=args.fps, hfov_deg=args.hfov, moving_objects=args.moving_objects,
            lighting_changes=args.lighting, texture_dir=None if args.texture_dir is None else str(args.texture_dir),
        )
    except SynthConfigError as err:
        raise CommandError(str(err)) from err


def _frames(args: argparse.Namespace, with_flow: bool) -> Iterator[SequenceFrame]:
    """Rendered frames with a progress bar; configuration problems become CommandError."""
    from tqdm import tqdm

    from geovis_ros.synthetic.scenes import SynthConfigError, render_sequence

    config = _config(args)
    try:
        yield from tqdm(render_sequence(config, with_flow), total=config.frames, unit="frame",
                        desc=f"{config.scene}/{config.trajectory}")
    except SynthConfigError as err:
        raise CommandError(str(err)) from err


def _tee(
    frames: Iterable[SequenceFrame], consumer: Callable[[Iterable[SequenceFrame]], Any]
) -> Iterator[SequenceFrame]:
    """Yield ``frames`` while ``consumer`` reads the same frames in a thread (bounded queue).

    The consumer's exception, if any, is raised here once the frames are exhausted.
    """
    channel: queue.Queue[SequenceFrame | None] = queue.Queue(maxsize=_QUEUE_FRAMES)
    failure: list[BaseException] = []

    def drain() -> Iterator[SequenceFrame]:
        while (frame := channel.get()) is not None:
            yield frame

    def run() -> None:
        try:
            consumer(drain())
        except BaseException as err:  # handed to the main thread, raised there
            failure.append(err)
            while channel.get() is not None:  # keep the producer unblocked
                pass

    worker = threading.Thread(target=run, name="bag-writer", daemon=True)
    worker.start()
    try:
        for frame in frames:
            if failure:
                break
            channel.put(frame)
            yield frame
    finally:
        channel.put(None)
        worker.join()
    if failure:
        raise failure[0]


def _run_synth(args: argparse.Namespace) -> int:
    from geovis_ros.data.image_io import DatasetError
    from geovis_ros.data.tum import write_tum_sequence

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise CommandError(f"--out {out} is not empty (use --force to write into it)")
    rendered = _frames(args, with_flow=not args.no_flow)
    first = next(rendered)  # builds the scene: configuration errors surface before any file is written
    frames: Iterator[SequenceFrame] = itertools.chain([first], rendered)
    bag_path = out / "bag"
    try:
        if args.bag:
            from geovis_ros.data.bag import write_bag

            if bag_path.exists():
                raise CommandError(f"{bag_path} already exists; remove it or choose another --out")
            frames = _tee(frames, lambda f: write_bag(bag_path, f, storage=args.bag_format,
                                                      with_depth=args.bag_depth))
        write_tum_sequence(out, frames)
    except DatasetError as err:
        raise CommandError(str(err)) from err
    print(f"wrote {out}" + (f" and {bag_path} ({args.bag_format})" if args.bag else ""))
    return 0


def contact_sheet(frames: list[SequenceFrame]) -> NDArray[np.uint8]:
    """(rows * H, 4 * W, 3) uint8 RGB: per frame its image, depth, flow colours and flow validity.

    Depth shares one colour range over all frames (2nd-98th percentile); frames without depth or
    flow show black tiles.
    """
    from geovis_ros.visualization import depth_to_color, flow_to_color

    finite = [f.depth[np.isfinite(f.depth)] for f in frames if f.depth is not None]
    near, far = np.percentile(np.concatenate(finite), [2, 98]) if finite else (0.0, 1.0)
    rows = []
    for frame in frames:
        black = np.zeros_like(frame.rgb)
        depth = black if frame.depth is None else depth_to_color(frame.depth, float(near), float(max(far, near + 1e-3)))
        flow = black if frame.flow is None else flow_to_color(frame.flow)
        valid = black if frame.flow_valid is None else np.repeat(frame.flow_valid[..., None] * np.uint8(255), 3, 2)
        rows.append(np.concatenate([frame.rgb, depth, flow, valid], axis=1))
    return np.concatenate(rows, axis=0)


def _run_preview(args: argparse.Namespace) -> int:
    from geovis_ros.data.image_io import DatasetError, write_rgb

    if args.rows < 1:
        raise CommandError(f"--rows must be >= 1, got {args.rows}")
    if args.out.suffix.lower() != ".png":
        raise CommandError(f"--out must name a .png file, got {args.out}")
    shown = set(np.linspace(0, max(args.frames - 2, 0), args.rows).round().astype(int).tolist())
    picked = [frame for index, frame in enumerate(_frames(args, with_flow=True)) if index in shown]
    try:
        write_rgb(args.out, contact_sheet(picked))
    except DatasetError as err:
        raise CommandError(str(err)) from err
    print(f"wrote {args.out}")
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    from geovis_ros.synthetic.scenes import bench_render

    bench_render(_config(args))
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch ``geovis dataset <sub-command>``; returns the exit status."""
    handlers = {"synth": _run_synth, "preview": _run_preview, "bench": _run_bench}
    return handlers[args.dataset_command](args)
