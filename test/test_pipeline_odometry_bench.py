"""Odometry evaluation and timing on rendered sequences: direct vs the feature baseline, side by side.

Run as a script for the figures (not part of the test run's timing)::

    python test/test_pipeline_odometry_bench.py --frames 300 --width 320 --height 240 \\
        --sequence room/handheld --sequence street/driving --sequence room/loop

Depth input: the exact rendered depth corrupted like a monocular depth network (smooth multiplicative
bias field, pixel noise, per-image scale error; see ``network_like_depth``), or ``--exact-depth``.
Reported per sequence and method: ATE RMSE with SE(3) alignment and no scale correction (metres and
% of the trajectory length), ATE after Sim(3), RPE over 1 m (or 10 frames on short paths), lost
frames, keyframes, AbsRel of the finalized keyframes' fused depth vs the network depth of the same
frames, and per-frame wall and CPU time of the stage (no networks).
The pytest test below only checks that the harness runs on a tiny sequence.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from test_pipeline_odometry_helpers import abs_rel, exact_depth, network_like_depth, rendered

from geovis_ros.eval.metrics_traj import ate, cumulative_distances, rpe
from geovis_ros.pipeline.config import OdometryConfig
from geovis_ros.pipeline.frame import DepthResult
from geovis_ros.pipeline.odometry import KeyframeEventKind, OdometryStage, run_odometry


def baseline_config() -> OdometryConfig:
    """The classical peer: KLT + PnP-RANSAC on the keyframe's network depth, no fusion."""
    default = OdometryConfig()
    return dataclasses.replace(default, method="features", fusion=dataclasses.replace(default.fusion, enabled=False))


def evaluate(seq, config: OdometryConfig, exact: bool, seed: int = 123) -> dict[str, float]:
    """Run ``config`` over a rendered sequence and score it (see the module docstring)."""
    rng = np.random.default_rng(seed)
    depths = []
    for index in range(len(seq.rgb)):
        if exact:
            depths.append(exact_depth(seq.depth[index], seq.intrinsics))
        else:
            noisy, std = network_like_depth(seq.depth[index], rng)
            depths.append(DepthResult(noisy, std, seq.intrinsics))
    bench = run_odometry(config, ((seq.frame(i), depths[i], None) for i in range(len(seq.rgb))))
    # A second, untimed pass collects the finalized keyframes (same inputs, deterministic stage).
    finalized = []
    stage = OdometryStage(config, on_keyframe=lambda e: finalized.append(e.keyframe)
                          if e.kind is KeyframeEventKind.FINALIZED else None)
    for index in range(len(seq.rgb)):
        stage(seq.frame(index), depths[index])
    index_of = {int(s): i for i, s in enumerate(seq.stamps_ns)}
    network_abs_rel = [abs_rel(depths[index_of[k.stamp_ns]].depth, seq.depth[index_of[k.stamp_ns]])
                       for k in finalized]
    fused_abs_rel = [abs_rel(k.depth, seq.depth[index_of[k.stamp_ns]]) for k in finalized]
    length = float(cumulative_distances(seq.poses)[-1])
    se3, sim3 = ate(seq.poses, bench.poses, "se3"), ate(seq.poses, bench.poses, "sim3")
    relative = (rpe(seq.poses, bench.poses, delta=1.0, delta_unit="m", all_pairs=True) if length > 3.0
                else rpe(seq.poses, bench.poses, delta=min(10, len(seq.rgb) - 1)))
    summary = bench.summary()
    return {
        "path_m": length, "ate_m": se3["ate_rmse_m"], "ate_percent": 100.0 * se3["ate_rmse_m"] / length,
        "ate_sim3_m": sim3["ate_rmse_m"], "sim3_scale": sim3["aligned_scale"],
        "rpe_trans_m": relative["rpe_trans_rmse_m"], "rpe_rot_deg": relative["rpe_rot_rmse_deg"],
        "lost": summary["lost"], "keyframes": summary["keyframes"],
        "network_abs_rel": float(np.mean(network_abs_rel)) if network_abs_rel else float("nan"),
        "fused_abs_rel": float(np.mean(fused_abs_rel)) if fused_abs_rel else float("nan"),
        "ms_mean": summary["ms_mean"], "ms_median": summary["ms_median"], "cpu_ms_mean": summary["cpu_ms_mean"],
    }


def test_benchmark_harness_runs():
    seq = rendered(frames=10, width=64, height=48)
    scores = evaluate(seq, OdometryConfig(), exact=False)
    assert {"ate_percent", "fused_abs_rel", "ms_mean", "cpu_ms_mean"} <= set(scores)
    assert np.isfinite(scores["ate_m"]) and scores["ms_mean"] > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequence", action="append", help="scene/trajectory, repeatable (default room/handheld)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0, help="renderer seed")
    parser.add_argument("--moving-objects", type=int, default=0)
    parser.add_argument("--exact-depth", action="store_true", help="feed the exact depth instead of network-like")
    args = parser.parse_args()
    configs = {"direct": OdometryConfig(), "features": baseline_config()}
    for name in args.sequence or ["room/handheld"]:
        scene, trajectory = name.split("/")
        seq = rendered(scene, trajectory, args.frames, args.width, args.height, args.seed, args.moving_objects)
        for method, config in configs.items():
            s = evaluate(seq, config, args.exact_depth)
            print(
                f"{name} {args.width}x{args.height} {args.frames} frames {method:8s} path {s['path_m']:.2f} m | "
                f"ATE {s['ate_m']:.4f} m ({s['ate_percent']:.2f} %) Sim3 {s['ate_sim3_m']:.4f} m "
                f"(scale {s['sim3_scale']:.3f}) | RPE {s['rpe_trans_m']:.4f} m {s['rpe_rot_deg']:.3f} deg | "
                f"lost {s['lost']:.0f} keyframes {s['keyframes']:.0f} | keyframe AbsRel network "
                f"{s['network_abs_rel']:.4f} fused {s['fused_abs_rel']:.4f} | ms/frame mean {s['ms_mean']:.1f} "
                f"median {s['ms_median']:.1f} cpu {s['cpu_ms_mean']:.1f}", flush=True,
            )


if __name__ == "__main__":
    main()
