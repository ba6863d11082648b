"""The ROS-free composition: config from parameters, stage switches, one pass over a short sequence."""

import math
from pathlib import Path

import numpy as np
import pytest

from geovis_ros.apps.run_report import json_ready, timing_metrics, trajectory_metrics
from geovis_ros.frame import Frame, TrackingState
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.pipeline.pipeline import (
    PIPELINE_PARAMETERS,
    STAGES,
    Pipeline,
    PipelineConfig,
    network_input_width,
    pipeline_config_from_parameters,
)
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence
from geovis_ros.visualization import colored_depth, frustum_lines

TORCH = {"backend": "torch", "device": "cpu"}


def test_config_from_parameters_maps_every_pipeline_parameter(tmp_path):
    values = {
        "backend": "onnxruntime", "device": "cpu", "precision": "fp16", "engine_cache_dir": str(tmp_path),
        "model_depth": "/models/d.onnx", "model_flow": "/models/f.onnx", "model_pose": "/models/p.onnx",
        "model_depth_card": "depth_anything_v2", "model_flow_card": "/models/f.yaml",
        "flow_refinement": "network",
        "input_width": 160, "input_height": 100, "odometry_method": "features", "motion_prior": "pose_network",
        "odom_frame": "world", "map_voxel_size": 0.1, "map_max_points": 5000, "points_stride": 4,
        "points_confidence": 2.0, "camera_height": 1.2,
    }
    assert set(values) == set(PIPELINE_PARAMETERS)
    config = pipeline_config_from_parameters(values, ("depth", "odometry"))
    assert config.stages == ("depth", "odometry")
    engine = config.depth_network.engine
    assert (engine.backend, engine.device, engine.precision, engine.engine_cache_dir) == (
        "onnxruntime", "cpu", "fp16", Path(tmp_path))
    assert config.flow_network.engine == engine  # one runtime for every network
    assert config.depth_network.model_path == "/models/d.onnx" and config.flow_network.model_path == "/models/f.onnx"
    assert config.depth_network.card == "depth_anything_v2" and config.flow_network.card == "/models/f.yaml"
    assert config.flow_network.flow_refinement == "network"
    assert config.pose_network.model_path == "/models/p.onnx" and config.pose_prior
    assert not pipeline_config_from_parameters(values, ("depth",)).pose_prior  # no odometry, no pose prior
    assert config.depth_network.input_width == 160 and config.max_network_height == 100
    assert config.odometry_config.method == "features" and config.odom_frame == "world"
    assert config.mapping_config.map.map.voxel_size_m == 0.1 and config.mapping_config.map.map.max_points == 5000
    assert config.cloud.stride == 4 and config.cloud.std_over_median == 2.0
    assert config.odometry_config.scale.camera_height == 1.2


def test_config_defaults_match_the_node_parameter_defaults():
    config = pipeline_config_from_parameters({"backend": "auto", "input_width": 320, "input_height": 240,
                                              "odom_frame": "odom", "points_stride": 2})
    assert config.stages == STAGES
    assert config.depth_network.input_width == 320 and config.max_network_height == 240
    assert config.cloud.stride == 2 and config.odom_frame == "odom"
    assert not config.pose_prior  # constant velocity unless asked


@pytest.mark.parametrize(("values", "stages", "message"), [
    ({"backend": "cuda-magic"}, STAGES, "backend"),
    ({"odometry_method": "orb"}, STAGES, "method"),
    ({"motion_prior": "gyro"}, STAGES, "motion_prior"),
    ({}, ("depth", "teleport"), "teleport"),
    ({}, ("odometry",), "needs the depth stage"),
    ({}, ("depth", "mapping"), "needs the odometry stage"),
])
def test_config_refuses_bad_values_naming_them(values, stages, message):
    with pytest.raises(ValueError, match=message):
        pipeline_config_from_parameters(values, stages)


@pytest.mark.parametrize(("image", "box", "expected"), [
    ((640, 480), (320, 240), 320),
    ((1280, 720), (320, 240), 320),
    ((480, 640), (320, 240), 180),  # portrait: the height bound decides
    ((64, 48), (320, 240), 64),  # never enlarged
    ((640, 480), (320, 0), 320),
])
def test_network_input_width_fits_the_box_without_enlarging(image, box, expected):
    assert network_input_width(*image, *box) == expected


@pytest.fixture(scope="module")
def sequence():
    return list(render_sequence(SynthConfig(scene="room", trajectory="handheld", frames=16, width=96, height=72,
                                            seed=2), with_flow=False))


@pytest.fixture(scope="module")
def full_run(sequence):
    pipeline = Pipeline(pipeline_config_from_parameters({**TORCH, "points_stride": 1}))
    results = [pipeline(Frame(f.stamp_ns, f.rgb, f.intrinsics, "cam")) for f in sequence]
    return pipeline, results


def test_full_pipeline_gives_every_output_per_frame(full_run, sequence):
    pipeline, results = full_run
    assert len(results) == len(sequence)
    assert results[0].flow is None and all(r.flow is not None for r in results[1:])
    for result in results:
        assert result.depth.depth.shape == (72, 96) and result.depth.std.shape == (72, 96)
        assert result.odometry.pose.shape == (4, 4) and result.odometry.covariance.shape == (6, 6)
        assert result.points.frame_id == "cam" and result.points.xyz.dtype == np.float32
        assert set(result.timings_ms) == {"depth", "flow", "networks", "odometry", "fused_depth", "points", "mapping",
                                          "total"}
        # the published depth is the fused one, in the odometry's scale; the network's is kept beside it
        assert result.network_depth is not None and result.network_depth.depth.shape == (72, 96)
        assert result.depth.source is result.odometry.scale_source
        assert result.timings_ms["total"] >= result.timings_ms["depth"] > 0
    assert results[0].odometry.state is TrackingState.INITIALIZING
    np.testing.assert_allclose(results[0].odometry.pose, np.eye(4))
    description = pipeline.describe()
    for key in ("stages", "depth_backend", "flow_backend", "tracking_state", "keyframes", "map_points", "total_ms"):
        assert key in description
    assert description["depth_backend"] == "torch"


def test_finish_maps_the_active_keyframe_in_the_odom_frame(full_run):
    pipeline, _ = full_run
    version = pipeline.map_version
    pipeline.finish()
    assert pipeline.map_version > version
    cloud = pipeline.map_cloud()
    assert cloud.frame_id == "odom" and cloud.xyz.shape == cloud.rgb.shape and np.isfinite(cloud.xyz).all()
    poses = pipeline.keyframe_poses()
    assert poses and all(p.shape == (4, 4) for p in poses.values())
    np.testing.assert_allclose(poses[min(poses)], np.eye(4), atol=1e-9)  # odom = the first keyframe


def test_reset_restarts_the_stream(sequence):
    pipeline = Pipeline(pipeline_config_from_parameters(TORCH, ("depth", "flow")))
    frames = [Frame(f.stamp_ns, f.rgb, f.intrinsics) for f in sequence[:3]]
    assert pipeline(frames[0]).flow is None and pipeline(frames[1]).flow is not None
    pipeline.reset()
    assert pipeline(frames[2]).flow is None
    assert pipeline.map_cloud().xyz.shape == (0, 3) and pipeline.keyframe_poses() == {}


def test_depth_only_pipeline_survives_black_and_resized_frames():
    pipeline = Pipeline(pipeline_config_from_parameters(TORCH, ("depth",)))
    small = Intrinsics(40.0, 40.0, 31.5, 23.5, 64, 48)
    black = pipeline(Frame(1, np.zeros((48, 64, 3), np.uint8), small))
    assert black.depth.depth.shape == (48, 64) and black.flow is None and black.odometry is None
    large = pipeline(Frame(2, np.full((72, 96, 3), 128, np.uint8), small.resized(96, 72)))
    assert large.depth.depth.shape == (72, 96)
    assert set(large.timings_ms) == {"depth", "points", "total"}


def test_visuals_colour_depth_and_draw_frustums():
    depth = np.linspace(1.0, 5.0, 12, dtype=np.float32).reshape(3, 4)
    depth[0, 0] = np.nan
    image = colored_depth(depth)
    assert image.shape == (3, 4, 3) and image.dtype == np.uint8 and not image[0, 0].any()
    assert image[0, 1].sum() > image[2, 3].sum()  # near is brighter
    assert not colored_depth(np.full((2, 2), np.nan, np.float32)).any()
    pose = np.eye(4)
    pose[:3, 3] = [1.0, 2.0, 3.0]
    lines = frustum_lines(np.stack([np.eye(4), pose]), Intrinsics(10.0, 10.0, 4.5, 3.5, 10, 8), depth_m=1.0)
    assert lines.shape == (32, 3)
    np.testing.assert_allclose(lines[0], 0.0)  # first ray starts at the optical centre
    np.testing.assert_allclose(lines[16], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(lines[1], [-0.45, -0.35, 1.0])


def test_run_report_scores():
    poses = np.tile(np.eye(4), (5, 1, 1))
    poses[:, :2, 3] = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 2]]  # 4 m, not collinear
    stamps = np.arange(5) * 100_000_000
    shifted = poses.copy()
    shifted[:, 2, 3] += 3.0  # a rigid offset: aligned away
    scores, evaluation = trajectory_metrics(stamps, poses, stamps, shifted)
    assert scores["ate_rmse_m"] == pytest.approx(0.0, abs=1e-9)
    assert scores["trajectory_length_m"] == pytest.approx(4.0) and evaluation is not None
    empty, none = trajectory_metrics([], np.zeros((0, 4, 4)), stamps, poses)
    assert none is None and math.isnan(empty["ate_rmse_m"]) and empty["estimated_length_m"] == pytest.approx(4.0)
    timing = timing_metrics([900.0, 800.0, 10.0, 20.0, 30.0], [1.0, 2.0, 2.1, 2.2, 2.3])
    assert timing["fps"] == pytest.approx(10.0) and timing["latency_ms_p50"] == pytest.approx(20.0)
    assert json_ready({"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(2)]}) == {"a": None, "b": 1.5,
                                                                                         "c": [2]}


def test_pipeline_config_validates_itself():
    with pytest.raises(ValueError, match="max_network_height"):
        PipelineConfig(max_network_height=-1)
    with pytest.raises(ValueError, match="odom_frame"):
        PipelineConfig(odom_frame="")
    with pytest.raises(ValueError, match="pose prior"):
        PipelineConfig(odometry=False, mapping=False, pose_prior=True)


def test_pose_network_prior_feeds_the_odometry(sequence):
    pipeline = Pipeline(pipeline_config_from_parameters({**TORCH, "motion_prior": "pose_network"},
                                                        ("depth", "odometry")))
    frames = [Frame(f.stamp_ns, f.rgb, f.intrinsics) for f in sequence[:6]]
    results = [pipeline(frame) for frame in frames]
    assert all("pose" in r.timings_ms for r in results)
    assert results[0].odometry.state is TrackingState.INITIALIZING
    assert all(np.isfinite(r.odometry.pose).all() for r in results)
    assert pipeline.describe()["pose_backend"] == "torch"
    prior = pipeline.pose_stage(frames[0])  # after frame 5: the motion 5 -> 0 is a valid (4, 4) rigid motion
    np.testing.assert_allclose(prior[:3, :3] @ prior[:3, :3].T, np.eye(3), atol=1e-9)
    pipeline.reset()
    assert pipeline.pose_stage(frames[1]) is None  # the first frame of a new stream has no previous frame


def test_a_camera_height_known_later_restarts_the_odometry_with_metric_scale(sequence):
    pipeline = Pipeline(pipeline_config_from_parameters(TORCH, ("depth", "odometry")))
    pipeline(Frame(sequence[0].stamp_ns, sequence[0].rgb, sequence[0].intrinsics))
    assert pipeline.config.odometry_config.scale.camera_height == 0.0
    pipeline.set_camera_height(1.65)
    assert pipeline.config.odometry_config.scale.camera_height == 1.65
    assert pipeline.odometry_stage.config.scale.camera_height == 1.65
    result = pipeline(Frame(sequence[1].stamp_ns, sequence[1].rgb, sequence[1].intrinsics))
    assert result.odometry is not None and np.allclose(result.odometry.pose, np.eye(4))  # a fresh start
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="camera height"):
            pipeline.set_camera_height(bad)


def test_the_per_frame_cloud_is_skipped_when_not_asked_for(sequence):
    pipeline = Pipeline(pipeline_config_from_parameters(TORCH, ("depth",)))
    frames = [Frame(f.stamp_ns, f.rgb, f.intrinsics, "cam") for f in sequence[:2]]
    skipped, computed = pipeline(frames[0], points=False), pipeline(frames[1])
    assert skipped.depth is not None and skipped.points is None and "points" not in skipped.timings_ms
    assert computed.points is not None and len(computed.points.xyz) > 0 and "points" in computed.timings_ms
