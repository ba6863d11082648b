"""``geovis vo-bench`` (smoke run, scoring helpers, clean errors) and the simulated network depth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from geovis_ros.apps.odometry import make_pose_estimator
from geovis_ros.apps.vo_bench import (
    end_point_drift,
    format_targets,
    method_configs,
    target_rows,
    trajectory_scores,
)
from geovis_ros.cli import main
from geovis_ros.eval.simulated_depth import network_like_depth
from geovis_ros.frame import Frame
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.geometry.se3 import make_pose, so3_exp
from geovis_ros.slam.frontend.config import classical_baseline_config, odometry_config_for


def circle(n: int = 40, radius: float = 2.0) -> np.ndarray:
    """(n, 4, 4) poses on a horizontal circle, turning with it (a loop that ends near its start)."""
    angle = np.linspace(0.0, 1.9 * np.pi, n)
    return np.stack([
        make_pose(so3_exp([0.0, a, 0.0]), [radius * np.cos(a), 0.1 * np.sin(3 * a), radius * np.sin(a)])
        for a in angle
    ])


# --- the command ------------------------------------------------------------------------------


def test_quick_run_prints_one_table_and_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    status = main(["vo-bench", "--quick", "--sequence", "room/loop", "--memory-frames", "60", "--json", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "room/loop" in printed and "features" in printed and "target (issue 6)" in printed
    assert "map memory: 60 frames" in printed
    report = json.loads(out.read_text())
    assert report["settings"]["frames"] == 12 and report["settings"]["width"] == 64
    sequence = report["sequences"][0]
    assert sequence["is_loop"] and sequence["path_m"] > 0
    for method in ("direct", "features"):
        scores = sequence[method]
        assert math.isfinite(scores["ate_m"]) and scores["ms_mean"] > 0 and scores["ms_p90"] >= 0
        assert 0 < scores["network_abs_rel"] < 1 and scores["keyframes"] >= 1
        assert scores["end_drift_m"] >= 0 and scores["loops"] >= 0
    assert sequence["ate_ratio"] == pytest.approx(sequence["features"]["ate_m"] / sequence["direct"]["ate_m"])
    assert report["memory"]["frames"] == 60
    targets = {row["target"] for row in report["targets"]}
    assert {"RPE translation <= 1 %", "loop closure end drift >= 5x lower"} <= targets


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--frames", "2"], "--frames must be >= 5"),
        (["--sequence", "room"], "scene/trajectory"),
        (["--sequence", "moon/handheld"], "unknown scene 'moon'"),
        (["--sequence", "room/teleport"], "unknown trajectory 'teleport'"),
        (["--memory-frames", "-1"], "--memory-frames must be >= 0"),
    ],
)
def test_bad_options_are_clean_errors(capsys, extra, message: str) -> None:
    assert main(["vo-bench", "--quick", *extra]) == 2
    assert message in capsys.readouterr().err


def test_bad_size_is_refused_by_the_parser(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["vo-bench", "--size", "320"])
    assert exit_info.value.code == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_network_depth_without_weights_is_a_clean_error(tmp_path, monkeypatch, capsys) -> None:
    from geovis_ros.models import checkpoint

    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path)  # an empty folder: no shipped weights
    assert main(["vo-bench", "--quick", "--depth", "network"]) == 2
    assert "no shipped depth weights" in capsys.readouterr().err


# --- scoring helpers --------------------------------------------------------------------------


def test_methods_compare_direct_fusion_with_the_feature_baseline() -> None:
    configs = method_configs()
    assert configs["direct"].method == "direct" and configs["direct"].fusion.enabled
    assert configs["features"] == classical_baseline_config() == odometry_config_for("features")
    assert configs["features"].method == "features" and not configs["features"].fusion.enabled
    assert odometry_config_for("direct") == configs["direct"]
    with pytest.raises(ValueError, match="method"):
        odometry_config_for("orb")  # type: ignore[arg-type]


def test_trajectory_scores_exact_and_scaled() -> None:
    truth = circle()
    exact = trajectory_scores(truth, truth)
    assert exact["ate_m"] == pytest.approx(0.0, abs=1e-9) and exact["end_drift_m"] == pytest.approx(0.0, abs=1e-9)
    assert exact["path_m"] == pytest.approx(2.0 * 1.9 * np.pi, rel=0.05)
    scaled = truth.copy()
    scaled[:, :3, 3] *= 1.1  # a 10 % scale error: SE(3) ATE sees it, Sim(3) removes it
    scores = trajectory_scores(truth, scaled)
    assert scores["ate_m"] > 0.05 and scores["ate_sim3_m"] == pytest.approx(0.0, abs=1e-6)
    assert scores["sim3_scale"] == pytest.approx(1 / 1.1, rel=1e-6)
    assert scores["ate_pct"] == pytest.approx(100 * scores["ate_m"] / scores["path_m"])


def test_end_point_drift_ignores_the_start_pose_and_measures_the_end() -> None:
    truth = circle()
    moved = make_pose(so3_exp([0.0, 0.0, 0.5]), [1.0, 2.0, 3.0]) @ truth  # another world frame
    assert end_point_drift(truth, moved) == pytest.approx(0.0, abs=1e-9)
    drifted = truth.copy()
    drifted[-1, :3, 3] += [0.3, 0.0, 0.4]
    assert end_point_drift(truth, drifted) == pytest.approx(0.5)


def _fake_sequence(name: str, is_loop: bool, ate_pct: float, drift_factor: float, nees: float = 3.0) -> dict:
    direct = {"ate_pct": ate_pct, "rpe_pct": 0.5, "reduction_pct": 40.0, "drift_factor": drift_factor,
              "ms_mean": 12.0, "position_nees_mean": nees}
    return {"sequence": name, "is_loop": is_loop, "ate_ratio": 3.0, "direct": direct}


def test_target_rows_report_the_worst_sequence() -> None:
    sequences = [_fake_sequence("a/handheld", False, 0.4, 1.0), _fake_sequence("b/loop", True, 1.5, 6.0)]
    rows = {row.target: row for row in target_rows(sequences, None)}
    ate = rows["ATE SE(3), no scale <= 1 % of path"]
    assert (ate.worst, ate.where, ate.met) == (1.5, "b/loop", False)
    loop = rows["loop closure end drift >= 5x lower"]
    assert (loop.worst, loop.where, loop.met) == (6.0, "b/loop", True)  # only loop sequences count
    assert rows["tracking + fusion <= 20 ms/frame (mean)"].met
    assert rows["position NEES within 3x of 3 dof"].met
    assert not any("memory" in title for title in rows)
    with_memory = target_rows(sequences, {"rss_growth_pct": 12.0})
    assert with_memory[-1].target.startswith("memory") and with_memory[-1].met is False


def test_nees_target_names_the_sequence_farthest_from_three_either_way() -> None:
    sequences = [_fake_sequence("a/handheld", False, 0.4, 1.0, nees=8.0),
                 _fake_sequence("b/driving", False, 0.4, 1.0, nees=0.5)]
    row = {row.target: row for row in target_rows(sequences, None)}["position NEES within 3x of 3 dof"]
    assert (row.worst, row.where, row.met) == (0.5, "b/driving", False)  # 6x too cautious beats 2.7x overconfident


def test_target_that_cannot_be_measured_is_not_a_miss() -> None:
    sequences = [_fake_sequence("a/handheld", False, 0.4, 1.0)]
    sequences[0]["direct"]["reduction_pct"] = math.nan  # exact input depth: nothing to reduce
    rows = {row.target: row for row in target_rows(sequences, None)}
    assert rows["fused keyframe AbsRel >= 30 % lower"].met is None
    assert "n/a" in format_targets(list(rows.values()))


# --- simulated network depth ------------------------------------------------------------------


def test_network_like_depth_is_multiplicative_smooth_and_reproducible() -> None:
    depth = np.full((48, 64), 4.0, np.float32)
    depth[:, 32:] = 8.0
    depth[0, 0] = np.nan
    predicted, std = network_like_depth(depth, np.random.default_rng(3))
    assert predicted.shape == std.shape == depth.shape
    assert predicted.dtype == std.dtype == np.float32
    assert np.isnan(predicted[0, 0]) and np.isfinite(predicted[1:, 1:]).all()
    again, _ = network_like_depth(depth, np.random.default_rng(3))
    np.testing.assert_array_equal(predicted, again)
    log_error = np.log(predicted[1:, 1:] / depth[1:, 1:])
    assert 0.02 < np.mean(np.abs(log_error)) < 0.3  # a few to tens of percent, like a CNN
    # Multiplicative: the same draws on twice the depth give exactly twice the prediction.
    doubled, _ = network_like_depth(2 * depth, np.random.default_rng(3))
    np.testing.assert_allclose(doubled[1:, 1:], 2 * predicted[1:, 1:], rtol=1e-6)
    # Without the fine noise the relative error is a smooth field: no jump where the depth steps.
    smooth, _ = network_like_depth(depth, np.random.default_rng(3), noise_std=0.0)
    smooth_log_error = np.log(smooth[1:, 1:] / depth[1:, 1:])
    assert np.abs(np.diff(smooth_log_error, axis=1)).max() < 0.1
    assert np.abs(np.diff(smooth_log_error, axis=0)).max() < 0.1
    relative_std = math.sqrt(0.1**2 + 0.04**2 + 0.05**2)
    np.testing.assert_allclose(std[1:, 1:], predicted[1:, 1:] * relative_std, rtol=1e-5)


def test_network_like_depth_without_error_is_exact() -> None:
    depth = np.linspace(1.0, 9.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    predicted, std = network_like_depth(depth, np.random.default_rng(0), 0.0, 0.0, 0.0)
    np.testing.assert_allclose(predicted, depth, rtol=1e-6)
    assert not std.any()


@pytest.mark.parametrize(
    ("depth", "kwargs", "message"),
    [
        (np.ones(10, np.float32), {}, "must be an \\(H, W\\) map"),
        (np.ones((1, 10), np.float32), {}, "at least 2x2"),
        (np.ones((8, 8), np.float32), {"bias_std": -0.1}, "bias_std must be a finite number >= 0"),
        (np.ones((8, 8), np.float32), {"scale_std": math.nan}, "scale_std"),
    ],
)
def test_network_like_depth_rejects_bad_input(depth, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        network_like_depth(depth, np.random.default_rng(0), **kwargs)


def test_pose_network_prior_runs_both_methods(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["vo-bench", "--quick", "--sequence", "room/handheld", "--memory-frames", "0",
                 "--motion-prior", "pose_network", "--json", str(out)]) == 0
    assert "motion prior pose_network" in capsys.readouterr().out
    report = json.loads(out.read_text())
    for method in ("direct", "features"):
        assert math.isfinite(report["sequences"][0][method]["ate_m"])


def test_make_pose_estimator() -> None:
    assert make_pose_estimator("constant_velocity") is None
    with pytest.raises(ValueError, match="motion prior"):
        make_pose_estimator("gyro")
    estimator = make_pose_estimator("pose_network", backend="torch", device="cpu")
    intrinsics = Intrinsics(60.0, 60.0, 31.5, 23.5, 64, 48)
    rng = np.random.default_rng(0)
    frames = [Frame(i, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), intrinsics) for i in range(2)]
    assert estimator(frames[0]) is None
    prior = estimator(frames[1])
    assert prior.shape == (4, 4) and np.isfinite(prior).all()
