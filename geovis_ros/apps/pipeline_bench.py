"""``geovis pipeline-bench``: milliseconds per pipeline stage and per frame, with the classical peers.

Renders one synthetic sequence per image size and runs the real
:class:`~geovis_ros.pipeline.pipeline.Pipeline` over it in several variants, each from a fresh
pipeline: the default (``flow_refinement auto``, direct odometry), the flow network's learned
refinement forced on (``flow_refinement network``) and the features odometry. Per variant: the
mean wall time of every stage (``Pipeline`` ``timings_ms``: depth, flow, odometry, fused_depth,
points, mapping) and of the whole frame, and frames/s = 1000 / mean frame time; the first
``--warmup`` frames (engine creation, first keyframe) are left out. OpenCV DIS presets and the
flow network's seeded-DIS initialisation are timed on the same size by
:func:`geovis_ros.inference.bench.bench_dis`. One process: the rows of ``--backend`` /
``--device`` (default onnxruntime on the CPU) and, when ``--device`` is ``cpu``, the same
variants again on CUDA with ``--gpu-backend`` (default torch) where torch can use a CUDA device;
otherwise one line says why the GPU rows are absent. The ``backend`` column names what ran
(e.g. ``torch-cuda:0``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from geovis_ros.errors import CommandError
from geovis_ros.frame import Frame
from geovis_ros.inference.bench import bench_dis, parse_sizes
from geovis_ros.inference.devices import cuda_unavailable_reason
from geovis_ros.inference.engine import BackendUnavailableError
from geovis_ros.pipeline.pipeline import Pipeline, pipeline_config_from_parameters
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "flow-network": {"flow_refinement": "network"},
    "features-odometry": {"odometry_method": "features"},
}
"""Variant name -> the node parameters it sets on top of the command's backend and device."""


@dataclass(frozen=True)
class StageProfile:
    """Mean milliseconds per stage of one pipeline variant at one size (``stage_ms["total"]``: per frame)."""

    variant: str
    size: str
    backend: str
    frames: int
    stage_ms: dict[str, float]
    fps: float


def profile_pipeline(frames: Sequence[Frame], parameters: Mapping[str, str], variant: str, warmup: int,
                     ) -> StageProfile:
    """Run a fresh pipeline of ``parameters`` over ``frames``; mean ms per stage after ``warmup`` frames."""
    pipeline = Pipeline(pipeline_config_from_parameters(parameters))
    timings = [pipeline(frame).timings_ms for frame in frames][warmup:]
    stages = list(dict.fromkeys(name for t in timings for name in t))
    stage_ms = {name: float(np.mean([t.get(name, 0.0) for t in timings])) for name in stages}
    described = pipeline.describe()
    backend = f"{described.get('depth_backend', '?')}-{described.get('depth_device', '?')}"
    height, width = frames[0].image.shape[:2]
    return StageProfile(variant, f"{width}x{height}", backend, len(timings), stage_ms,
                        1000.0 / stage_ms["total"] if stage_ms.get("total") else 0.0)


def format_profiles(profiles: Sequence[StageProfile]) -> str:
    """A plain-text table: one row per (size, variant), one column per stage, then ms/frame and frames/s."""
    stages = list(dict.fromkeys(name for p in profiles for name in p.stage_ms if name != "total"))
    header = f"{'size':<9} {'variant':<18} {'backend':<18}" + "".join(f"{s:>12}" for s in stages) + \
        f"{'ms/frame':>10}{'fps':>7}"
    rows = [header]
    for p in profiles:
        cells = "".join(f"{p.stage_ms[s]:>12.1f}" if s in p.stage_ms else f"{'-':>12}" for s in stages)
        rows.append(f"{p.size:<9} {p.variant:<18} {p.backend:<18}{cells}{p.stage_ms.get('total', 0.0):>10.1f}"
                    f"{p.fps:>7.2f}")
    return "\n".join(rows)


def engine_runs(backend: str, device: str, gpu_backend: str) -> tuple[list[dict[str, str]], str | None]:
    """The backend/device parameters to profile, and a line saying why GPU rows are absent (None: there are some).

    ``backend`` on ``device`` always; with ``device`` ``cpu`` also ``gpu_backend`` on ``cuda`` when
    torch can use a CUDA device (``gpu_backend`` ``none``: no GPU rows). The line gives
    :func:`~geovis_ros.inference.devices.cuda_unavailable_reason` when CUDA is unusable.
    """
    runs = [{"backend": backend, "device": device}]
    reason = cuda_unavailable_reason()
    note = None if reason is None else f"no GPU rows: {reason}"
    if device != "cpu" or reason is not None:
        return runs, note
    if gpu_backend == "none":
        return runs, "no GPU rows: --gpu-backend none"
    return runs + [{"backend": gpu_backend, "device": "cuda"}], None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``geovis pipeline-bench``."""
    parser.add_argument("--sizes", default="320x240,640x480", help="image sizes WxH (default 320x240,640x480)")
    parser.add_argument("--frames", type=int, default=24, help="frames per run (default 24)")
    parser.add_argument("--warmup", type=int, default=4, help="first frames left out of the means (default 4)")
    parser.add_argument("--backend", default="onnxruntime", choices=("auto", "tensorrt", "torch", "onnxruntime"),
                        help="inference backend (default onnxruntime)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="device (default cpu)")
    parser.add_argument("--gpu-backend", default="torch", choices=("torch", "tensorrt", "none"),
                        help="with --device cpu, also run every variant on CUDA with this backend where CUDA is "
                             "usable (default torch; none: CPU rows only)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {', '.join(VARIANTS)} (default all)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Profile every variant at every size, time the DIS peers, print both tables."""
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise CommandError(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if args.frames <= args.warmup:
        raise CommandError(f"--frames ({args.frames}) must exceed --warmup ({args.warmup})")
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as err:
        raise CommandError(f"--sizes: {err}") from None
    runs, gpu_note = engine_runs(args.backend, args.device, args.gpu_backend)
    profiles: list[StageProfile] = []
    for height, width in sizes:
        rendered = render_sequence(SynthConfig(scene="room", trajectory="handheld", frames=args.frames,
                                               width=width, height=height), with_flow=False)
        frames = [Frame(f.stamp_ns, f.rgb, f.intrinsics, "camera") for f in rendered]
        for engine in runs:
            for variant in variants:
                parameters = {**engine, **VARIANTS[variant]}
                try:
                    profiles.append(profile_pipeline(frames, parameters, variant, args.warmup))
                except BackendUnavailableError as err:  # e.g. --device cuda without CUDA: one line, not a trace
                    raise CommandError(str(err)) from None
    peers = bench_dis(sizes, warmup=2, iterations=10)
    print(format_profiles(profiles))
    if gpu_note:
        print(f"note: {gpu_note}")
    print("\nclassical flow peers (CPU, mean ms per pair):")
    for peer in peers:
        print(f"  {peer.size:<9} {peer.name:<20} {peer.mean_ms:8.1f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"pipeline": [asdict(p) for p in profiles],
                                         "flow_peers": [asdict(p) for p in peers], "gpu_note": gpu_note},
                                        indent=2))
    return 0
