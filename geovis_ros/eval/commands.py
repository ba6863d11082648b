"""``geovis eval traj|depth|flow``: score estimates against ground truth; print a table, write JSON/PNG.

Stable forms (scripts call them):

- ``geovis eval traj --gt GT --est EST [--format tum|kitti] [--align se3|sim3|none] [--json OUT]
  [--plot OUT.png]`` -> ``{"ate_rmse_m", "rpe_trans_pct", "rpe_rot_deg_per_m", "aligned_scale", "pairs"}``
- ``geovis eval depth --gt GT --pred PRED [--gt-scale 1000] [--median-scaling] [--min-depth D]
  [--max-depth D] [--calib FB] [--json OUT] [--plot OUT.png]`` ->
  ``{"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "n_pixels"}``
- ``geovis eval flow --gt GT --pred PRED [--json OUT] [--plot OUT.png]`` -> ``{"epe", "fl_all", "n_pixels"}``
  (``fl_all`` is a fraction in [0, 1]).

The JSON files hold these keys plus details (counts, statistics, options). Non-finite numbers are
written as ``null``. Definitions: :mod:`geovis_ros.eval.metrics_traj`, ``metrics_depth``, ``metrics_flow``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from geovis_ros.errors import CommandError

DEPTH_SUFFIXES = (".png", ".npy", ".pfm")
FLOW_SUFFIXES = (".flo", ".png", ".npy")


# --------------------------------------------------------------------------------------------------
# Arguments


def _segment_lengths(text: str) -> tuple[float, ...]:
    try:
        lengths = tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated metres, got {text!r}") from None
    if not lengths or any(length <= 0 for length in lengths):
        raise argparse.ArgumentTypeError(f"segment lengths must be positive, got {text!r}")
    return lengths


def _add_pair_inputs(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--gt", type=Path, required=True, help=f"ground-truth {what} file or folder")
    parser.add_argument("--pred", type=Path, required=True, help=f"predicted {what} file or folder")


def _add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the scores to this JSON file")
    parser.add_argument("--plot", type=Path, metavar="OUT.png", help="write a figure to this PNG file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands ``traj``, ``depth`` and ``flow``."""
    sub = parser.add_subparsers(dest="eval_command", required=True, metavar="{traj,depth,flow}")

    traj = sub.add_parser(
        "traj",
        help="ATE and KITTI-style RPE of a TUM or KITTI trajectory file",
        description="Associate (by stamp for TUM, by index for KITTI), align (Umeyama) and score "
        "a trajectory.",
    )
    traj.add_argument("--gt", type=Path, required=True, help="ground-truth trajectory file")
    traj.add_argument("--est", type=Path, required=True, help="estimated trajectory file")
    traj.add_argument("--format", choices=("tum", "kitti"), default="tum", help="file format (default: tum)")
    traj.add_argument(
        "--align", choices=("se3", "sim3", "none"), default="se3",
        help="alignment of the estimate: se3 (default), sim3 (monocular: also scale), none",
    )
    traj.add_argument(
        "--max-diff", type=float, default=0.01, metavar="S",
        help="largest stamp difference for TUM association, seconds (default: 0.01)",
    )
    traj.add_argument(
        "--segment-lengths", type=_segment_lengths, metavar="L1,L2,...",
        help="RPE segment lengths in metres (default: KITTI's 100..800 m, scaled down for short paths)",
    )
    traj.add_argument(
        "--step-frames", type=int, default=10, metavar="N",
        help="RPE segments start every N frames (default: 10)",
    )
    _add_outputs(traj)
    traj.set_defaults(handler=_run_traj)

    depth = sub.add_parser(
        "depth",
        help="Eigen/monodepth2 depth metrics of two depth images or two folders",
        description="Score predicted depth against ground truth: one image each, or two folders whose files "
        "match by name (extension aside). PNG: 16-bit, value / scale = metres, 0 and 65535 = invalid; "
        ".npy: float metres, NaN/0 = invalid; .pfm: disparity, depth = --calib / disparity.",
    )
    _add_pair_inputs(depth, "depth")
    depth.add_argument(
        "--gt-scale", type=float, default=1000.0, help="16-bit PNG units per metre (default: 1000, i.e. mm)"
    )
    depth.add_argument("--pred-scale", type=float, help="the same for predicted PNGs (default: --gt-scale)")
    depth.add_argument(
        "--median-scaling", action="store_true", help="scale each prediction by median(gt)/median(pred)"
    )
    depth.add_argument(
        "--min-depth", type=float, default=1e-3, help="score gt depths above this, metres (default: 0.001)"
    )
    depth.add_argument(
        "--max-depth", type=float, default=80.0, help="score gt depths below this, metres (default: 80)"
    )
    depth.add_argument(
        "--calib", type=float, metavar="FB", help="focal length (px) x baseline (m), to read .pfm disparity"
    )
    _add_outputs(depth)
    depth.set_defaults(handler=_run_depth)

    flow = sub.add_parser(
        "flow",
        help="EPE and Fl-all of two flow files or two folders",
        description="Score predicted optical flow against ground truth: one file each, or two folders whose "
        "files match by name (extension aside). Formats: Middlebury .flo, KITTI 16-bit PNG (with its valid "
        "flag), .npy float (H, W, 2) with NaN = unknown.",
    )
    _add_pair_inputs(flow, "flow")
    _add_outputs(flow)
    flow.set_defaults(handler=_run_flow)


def run(args: argparse.Namespace) -> int:
    """Run the chosen sub-command.

    Unreadable or inconsistent input, or a missing optional package (matplotlib for ``--plot``, the
    image readers), becomes a CommandError.
    """
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (ValueError, OSError, ImportError) as err:  # DatasetError is a ValueError
        raise CommandError(str(err)) from err


# --------------------------------------------------------------------------------------------------
# Output


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _print_table(title: str, rows: list[tuple[str, Any]]) -> None:
    width = max(len(label) for label, _ in rows)
    print(title)
    for label, value in rows:
        if isinstance(value, float):
            text = f"{value:.6g}" if math.isfinite(value) else "n/a"
        else:
            text = str(value)
        print(f"  {label:<{width}}  {text}")


def _write_outputs(args: argparse.Namespace, scores: dict[str, Any], plot: Callable[[Path], Path]) -> None:
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_json_ready(scores), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if args.plot is not None:
        print(f"wrote {plot(args.plot)}")


# --------------------------------------------------------------------------------------------------
# traj


def _run_traj(args: argparse.Namespace) -> int:
    from geovis_ros.data.trajectory_io import read_trajectory
    from geovis_ros.eval.metrics_traj import evaluate_trajectory

    for label, path in (("ground truth", args.gt), ("estimate", args.est)):
        if not path.is_file():
            raise CommandError(f"{label} trajectory not found: {path}")
    gt_stamps, gt_poses = read_trajectory(args.gt, args.format)
    est_stamps, est_poses = read_trajectory(args.est, args.format)
    evaluation = evaluate_trajectory(
        gt_stamps, gt_poses, est_stamps, est_poses,
        align=args.align,
        associate_by="index" if args.format == "kitti" else "stamp",
        max_diff_s=args.max_diff,
        segment_lengths_m=args.segment_lengths,
        step_frames=args.step_frames,
    )
    s = evaluation.summary
    lengths = ", ".join(f"{length:g}" for length in s["segment_lengths_m"]) or "none (no motion)"
    _print_table(
        f"trajectory: {args.est} vs {args.gt} ({args.format}, align {args.align})",
        [
            ("pairs", s["pairs"]),
            ("path length [m]", s["path_length_m"]),
            ("ATE RMSE [m]", s["ate_rmse_m"]),
            ("ATE mean [m]", s["ate_mean_m"]),
            ("ATE median [m]", s["ate_median_m"]),
            ("ATE max [m]", s["ate_max_m"]),
            ("aligned scale", s["aligned_scale"]),
            ("RPE translation [%]", s["rpe_trans_pct"]),
            ("RPE rotation [deg/m]", s["rpe_rot_deg_per_m"]),
            ("RPE segments", f"{s['segments']} over lengths {lengths} m"),
        ],
    )

    def plot(path: Path) -> Path:
        from geovis_ros.eval.plots import plot_trajectory

        title = f"ATE RMSE {s['ate_rmse_m']:.4g} m (align {args.align}, scale {s['aligned_scale']:.4g})"
        time_label = "frame" if args.format == "kitti" else "time since start [s]"
        return plot_trajectory(
            path, evaluation.gt_poses[:, :3, 3], evaluation.est_poses[:, :3, 3], evaluation.stamps_s, title,
            time_label,
        )

    _write_outputs(args, s, plot)
    return 0


# --------------------------------------------------------------------------------------------------
# File pairing shared by depth and flow


def _pair_files(gt: Path, pred: Path, suffixes: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """(gt, pred) file pairs: the two files, or the files of two folders matched by name without suffix."""
    for label, path in (("ground truth", gt), ("prediction", pred)):
        if not path.exists():
            raise CommandError(f"{label} not found: {path}")
    if gt.is_file() and pred.is_file():
        return [(gt, pred)]
    if not (gt.is_dir() and pred.is_dir()):
        raise CommandError(f"--gt and --pred must both be files or both be folders: {gt}, {pred}")

    def by_stem(folder: Path) -> dict[str, Path]:
        files: dict[str, Path] = {}
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in suffixes:
                if path.stem in files:
                    raise CommandError(
                        f"two files named {path.stem!r} in {folder}: {files[path.stem].name}, {path.name}"
                    )
                files[path.stem] = path
        return files

    gt_files, pred_files = by_stem(gt), by_stem(pred)
    if not gt_files:
        raise CommandError(f"no {'/'.join(suffixes)} files in {gt}")
    missing = sorted(set(gt_files) - set(pred_files))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise CommandError(f"{len(missing)} ground-truth files have no prediction in {pred}: {shown}")
    return [(gt_files[stem], pred_files[stem]) for stem in sorted(gt_files)]


def _check_suffix(path: Path, suffixes: tuple[str, ...]) -> str:
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise CommandError(f"unsupported file type {path.name!r}; expected one of {', '.join(suffixes)}")
    return suffix


def _score_pairs(
    pairs: list[tuple[Path, Path]],
    load_gt: Callable[[Path], NDArray[np.float64]],
    load_pred: Callable[[Path], NDArray[np.float64]],
    add: Callable[[NDArray[np.float64], NDArray[np.float64]], dict[str, float]],
    metric: str,
) -> tuple[float, int]:
    """Load and ``add`` every (gt, pred) pair to an accumulator; returns the worst pair as (score, index).

    ``add`` is a metrics accumulator's ``add`` (returns that image's metrics); the worst pair has the
    highest finite ``metric`` ((-inf, 0) when none is finite). Raises CommandError when the two
    arrays of a pair differ in shape.
    """
    worst = (-math.inf, 0)
    for index, (gt_path, pred_path) in enumerate(pairs):
        gt, pred = load_gt(gt_path), load_pred(pred_path)
        if gt.shape != pred.shape:
            raise CommandError(f"size mismatch: {gt_path} is {gt.shape}, {pred_path} is {pred.shape}")
        value = add(gt, pred)[metric]
        if math.isfinite(value) and value > worst[0]:
            worst = (value, index)
    return worst


def _worst_title(pairs: list[tuple[Path, Path]], worst_index: int, score_text: str) -> str:
    """Figure title naming the plotted (worst) prediction and its score."""
    suffix = " (highest of the set)" if len(pairs) > 1 else ""
    return f"{pairs[worst_index][1].name}: {score_text}{suffix}"


# --------------------------------------------------------------------------------------------------
# depth


def load_depth(path: Path, png_scale: float, focal_baseline: float | None) -> NDArray[np.float64]:
    """(H, W) float64 depth in metres, NaN where invalid, from a .png (16-bit), .npy or .pfm (disparity)."""
    from geovis_ros.data.image_io import read_depth

    suffix = _check_suffix(path, DEPTH_SUFFIXES)
    values = np.asarray(read_depth(path, scale=png_scale), dtype=np.float64)
    if suffix != ".pfm":
        return values
    if focal_baseline is None:
        raise CommandError(f"{path} holds disparity: give --calib focal_px*baseline_m to turn it into depth")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, focal_baseline / values, np.nan)


def _run_depth(args: argparse.Namespace) -> int:
    from geovis_ros.eval.metrics_depth import DepthMetricsAccumulator

    pairs = _pair_files(args.gt, args.pred, DEPTH_SUFFIXES)
    pred_scale = args.gt_scale if args.pred_scale is None else args.pred_scale
    accumulator = DepthMetricsAccumulator(args.min_depth, args.max_depth, args.median_scaling)
    load_gt = functools.partial(load_depth, png_scale=args.gt_scale, focal_baseline=args.calib)
    load_pred = functools.partial(load_depth, png_scale=pred_scale, focal_baseline=args.calib)
    _, worst_index = _score_pairs(pairs, load_gt, load_pred, accumulator.add, "abs_rel")
    scores = accumulator.result()
    if scores["n_pixels"] == 0:
        raise CommandError(
            f"no pixel to score: no ground-truth depth in ({args.min_depth}, {args.max_depth}) m with a "
            f"finite prediction (check --gt-scale and the depth range)"
        )
    rows = [(key, scores[key]) for key in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")]
    rows += [("n_pixels", scores["n_pixels"]), ("n_images", scores["n_images"])]
    rows += [("pred_coverage", scores["pred_coverage"])]
    if args.median_scaling:
        rows += [("scale (median)", scores["scale"]), ("scale std", scores["scale_std"])]
    _print_table(f"depth: {args.pred} vs {args.gt}", rows)

    def plot(path: Path) -> Path:
        from geovis_ros.eval.plots import plot_depth

        gt_path, pred_path = pairs[worst_index]
        per_image = accumulator.per_image[worst_index]
        pred = load_pred(pred_path) * per_image.get("scale", 1.0)
        title = _worst_title(pairs, worst_index, f"abs_rel {per_image['abs_rel']:.4g}")
        return plot_depth(path, load_gt(gt_path), pred, args.min_depth, args.max_depth, title)

    _write_outputs(args, scores, plot)
    return 0


# --------------------------------------------------------------------------------------------------
# flow


def load_flow(path: Path) -> NDArray[np.float64]:
    """(H, W, 2) float64 flow in pixels, NaN where unknown, from a .flo, KITTI .png or .npy file."""
    if _check_suffix(path, FLOW_SUFFIXES) != ".npy":
        from geovis_ros.data.image_io import read_flow

        flow, valid = read_flow(path)
        return np.where(valid[..., None], flow, np.nan).astype(np.float64)
    array = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
    if array.ndim != 3 or array.shape[-1] != 2:
        raise CommandError(f"{path}: expected a flow field of shape (H, W, 2), got {array.shape}")
    return array


def _run_flow(args: argparse.Namespace) -> int:
    from geovis_ros.eval.metrics_flow import FlowMetricsAccumulator

    pairs = _pair_files(args.gt, args.pred, FLOW_SUFFIXES)
    accumulator = FlowMetricsAccumulator()
    worst_epe, worst_index = _score_pairs(pairs, load_flow, load_flow, accumulator.add, "epe")
    scores = accumulator.result()
    if scores["n_pixels"] == 0:
        raise CommandError("no pixel to score: the ground truth has no valid flow")
    _print_table(
        f"flow: {args.pred} vs {args.gt}",
        [
            ("EPE [px]", scores["epe"]),
            ("Fl-all [fraction]", scores["fl_all"]),
            ("n_pixels", scores["n_pixels"]),
            ("n_pred_missing", scores["n_pred_missing"]),
            ("n_images", scores["n_images"]),
        ],
    )

    def plot(path: Path) -> Path:
        from geovis_ros.eval.plots import plot_flow

        gt_path, pred_path = pairs[worst_index]
        title = _worst_title(pairs, worst_index, f"EPE {worst_epe:.4g} px")
        return plot_flow(path, load_flow(gt_path), load_flow(pred_path), title=title)

    _write_outputs(args, scores, plot)
    return 0
