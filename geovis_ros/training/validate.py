"""Validation of the networks on held-out sequences during and after training.

Metrics (the usual definitions; the project's ``geovis eval`` tools are the reference for reports):
- depth: AbsRel = mean(|d - d*| / d*), delta1 = fraction with max(d / d*, d* / d) < 1.25, metric
  (no scaling) and median-scaled (d * median(d*) / median(d) per image);
- flow: EPE (pixels) of the network and of its DIS-medium initialisation on the same pixels, EPE
  over pixels moving more than 20 px, Fl-all (EPE > 3 px and > 5 % of |flow*|);
- pose: rotation error and translation-direction error (degrees) of T_cam2_cam1, translation error (m).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from torch import nn

from geovis_ros.geometry.se3 import invert, rotation_angle
from geovis_ros.models.depth import MAX_DEPTH_M, predict_depth
from geovis_ros.models.flow import dis_flow, initial_flow, predict_flow
from geovis_ros.models.pose import predict_pose
from geovis_ros.training.datasets import SequenceArrays

LARGE_MOTION_PX = 20.0


def _frame_indices(seq: SequenceArrays, stride: int, need_next: bool) -> range:
    return range(0, len(seq) - (1 if need_next else 0), stride)


def depth_metrics(
    model: nn.Module, sequences: Sequence[SequenceArrays], network_size: tuple[int, int], stride: int = 1
) -> dict[str, float]:
    """AbsRel and delta1 (metric and median-scaled) pooled over every valid pixel of the frames."""
    abs_rel, delta, abs_rel_med, delta_med, count = 0.0, 0.0, 0.0, 0.0, 0
    for seq in sequences:
        if seq.depth is None:
            continue
        for i in _frame_indices(seq, stride, need_next=False):
            gt = seq.depth[i]
            pred, _ = predict_depth(model, seq.rgb[i], seq.intrinsics, network_size)
            valid = np.isfinite(gt) & (gt > 0) & (gt < MAX_DEPTH_M)
            if not valid.any():
                continue
            p, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
            p_med = p * np.median(g) / np.median(p)
            abs_rel += float(np.sum(np.abs(p - g) / g))
            delta += float(np.sum(np.maximum(p / g, g / p) < 1.25))
            abs_rel_med += float(np.sum(np.abs(p_med - g) / g))
            delta_med += float(np.sum(np.maximum(p_med / g, g / p_med) < 1.25))
            count += int(valid.sum())
    n = max(count, 1)
    return {"abs_rel": abs_rel / n, "delta1": delta / n, "abs_rel_median": abs_rel_med / n,
            "delta1_median": delta_med / n, "pixels": float(count)}


def _flow_errors(flow: NDArray[np.float32], gt: NDArray[np.float32], valid: NDArray[np.bool_]) -> NDArray[np.float64]:
    return np.linalg.norm(flow[valid].astype(np.float64) - gt[valid], axis=-1)


def flow_metrics(model: nn.Module, sequences: Sequence[SequenceArrays], stride: int = 1) -> dict[str, float]:
    """EPE, large-motion EPE and Fl-all of three flows on the same valid pixels.

    No suffix: the network; ``_init``: its classical initialisation alone (seeded DIS); ``_dis``: the
    peer, plain DIS medium.
    """
    sums = {f"{metric}{suffix}": 0.0 for metric in ("epe", "epe_large", "fl_all") for suffix in ("", "_init", "_dis")}
    count, count_large = 0, 0
    for seq in sequences:
        if seq.flow is None or seq.flow_valid is None:
            continue
        for i in _frame_indices(seq, stride, need_next=True):
            gt, valid = seq.flow[i], seq.flow_valid[i] & np.isfinite(seq.flow[i]).all(-1)
            if not valid.any():
                continue
            magnitude = np.linalg.norm(gt[valid], axis=-1)
            large = magnitude > LARGE_MOTION_PX
            for suffix, flow in (("", predict_flow(model, seq.rgb[i], seq.rgb[i + 1])),
                                 ("_init", initial_flow(seq.rgb[i], seq.rgb[i + 1])),
                                 ("_dis", dis_flow(seq.rgb[i], seq.rgb[i + 1]))):
                err = _flow_errors(flow, gt, valid)
                sums[f"epe{suffix}"] += float(err.sum())
                sums[f"epe_large{suffix}"] += float(err[large].sum())
                sums[f"fl_all{suffix}"] += float(np.sum((err > 3.0) & (err > 0.05 * magnitude)))
            count += int(valid.sum())
            count_large += int(large.sum())
    out = {k: v / max(count_large if "large" in k else count, 1) for k, v in sums.items()}
    out["epe_ratio"] = out["epe"] / max(out["epe_dis"], 1e-9)
    out["pixels"], out["pixels_large"] = float(count), float(count_large)
    return out


def pose_metrics(
    model: nn.Module, sequences: Sequence[SequenceArrays], network_size: tuple[int, int], stride: int = 1
) -> dict[str, float]:
    """Mean rotation error (deg), translation-direction error (deg, motions > 1 cm) and translation error (m)."""
    rot, direction, trans = [], [], []
    for seq in sequences:
        if seq.poses is None:
            continue
        for i in _frame_indices(seq, stride, need_next=True):
            gt = invert(seq.poses[i + 1]) @ seq.poses[i]
            pred = predict_pose(model, seq.rgb[i], seq.rgb[i + 1], network_size)
            rot.append(np.degrees(rotation_angle(pred[:3, :3] @ gt[:3, :3].T)))
            trans.append(float(np.linalg.norm(pred[:3, 3] - gt[:3, 3])))
            t_gt, t_pred = gt[:3, 3], pred[:3, 3]
            if np.linalg.norm(t_gt) > 0.01 and np.linalg.norm(t_pred) > 1e-9:
                cos = np.dot(t_gt, t_pred) / (np.linalg.norm(t_gt) * np.linalg.norm(t_pred))
                direction.append(float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
    return {
        "rotation_error_deg": float(np.mean(rot)) if rot else float("nan"),
        "translation_direction_error_deg": float(np.mean(direction)) if direction else float("nan"),
        "translation_error_m": float(np.mean(trans)) if trans else float("nan"),
        "pairs": float(len(rot)),
    }
