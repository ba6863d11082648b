"""``geovis process-bag``: the pipeline over a recorded bag without ROS, output bag + report."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from test_data_io_bag import lie_about_frame_id_length, rewrite_messages

from geovis_ros.apps.ply import read_ply
from geovis_ros.apps.process_bag import load_parameters
from geovis_ros.cli import main
from geovis_ros.data.bag import write_bag
from geovis_ros.errors import CommandError, GeovisError
from geovis_ros.models.depth import DepthNet
from geovis_ros.pipeline.pipeline import Pipeline
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

FRAMES = 12


def topic_counts(path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        keyframes = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(
            [c for c in reader.connections if c.topic.endswith("/keyframes")])]
        odometry = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(
            [c for c in reader.connections if c.topic.endswith("/odom")])]
    return counts, keyframes, odometry


@pytest.fixture(scope="module")
def input_bag(tmp_path_factory):
    folder = tmp_path_factory.mktemp("process_bag")
    frames = render_sequence(SynthConfig(scene="room", trajectory="handheld", frames=FRAMES, width=96, height=72,
                                         seed=4), with_flow=False)
    return write_bag(folder / "input", frames, with_depth=True)


@pytest.fixture(scope="module")
def processed(input_bag, tmp_path_factory):
    folder = tmp_path_factory.mktemp("processed")
    config = folder / "geovis.yaml"
    config.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"backend": "torch", "mode": "bag",
                                                                  "input_width": 96, "map_rate": 30.0}},
                                      "other_node": {"ros__parameters": {"backend": "tensorrt"}}}))
    output = folder / "output"
    status = main(["process-bag", str(input_bag), str(output), "--config", str(config), "--storage", "mcap",
                   "--max-frames", str(FRAMES - 2)])
    return status, output


def test_output_bag_holds_every_output_topic(processed):
    status, output = processed
    assert status == 0
    counts, keyframes, odometry = topic_counts(output)
    processed_frames = FRAMES - 2
    for topic in ("depth/image", "depth/uncertainty", "depth/colored", "depth/camera_info", "points", "odom"):
        assert counts[f"/geovis/{topic}"] == processed_frames, topic
    assert counts["/geovis/flow/image"] == counts["/geovis/flow/colored"] == processed_frames - 1
    assert counts["/tf"] == processed_frames and counts["/geovis/path"] == 1
    assert counts["/geovis/map"] >= 1 and counts["/geovis/map"] == counts["/geovis/keyframes"]
    assert len(keyframes[-1].markers[0].points) % 16 == 0 and keyframes[-1].markers[0].points
    assert {(m.header.frame_id, m.child_frame_id) for m in odometry} == {("odom", "camera")}
    assert next((output).glob("*.mcap"), None) is not None


def test_report_scores_against_the_bag_ground_truth(processed):
    _, output = processed
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["frames_in"] == metrics["frames_out"] == FRAMES - 2 and metrics["skipped_frames"] == 0
    assert metrics["depth_frames"] == FRAMES - 2 and metrics["depth_absrel"] > 0
    assert metrics["ate_rmse_m"] >= 0 and metrics["trajectory_length_m"] > 0
    assert metrics["backend"] == "torch-cpu" and metrics["timed_frames"] == FRAMES - 4
    for key in ("latency_ms_p50", "latency_ms_p99", "fps", "depth_ms_mean", "odometry_ms_mean", "map_points"):
        assert metrics[key] is not None and not math.isnan(metrics[key]), key
    report = (output / "report.md").read_text()
    assert "| `ate_rmse_m` |" in report and "trajectory.png" in report
    assert (output / "trajectory.png").stat().st_size > 0 and (output / "depth.png").stat().st_size > 0
    cloud = read_ply(output / "map.ply")
    assert cloud.frame_id == "odom" and len(cloud.xyz) == metrics["map_points"]


def test_switches_turn_outputs_and_the_flow_stage_off(input_bag, tmp_path):
    config = tmp_path / "flat.yaml"
    config.write_text(yaml.safe_dump({"backend": "torch", "input_width": 64, "publish_flow": False,
                                      "publish_colored": False, "publish_tf": False, "publish_points": False}))
    output = tmp_path / "out"
    assert main(["process-bag", str(input_bag), str(output), "--config", str(config), "--max-frames", "3"]) == 0
    counts, _, _ = topic_counts(output)
    assert counts["/geovis/depth/image"] == 3 and counts["/geovis/odom"] == 3
    assert not {"/geovis/flow/image", "/geovis/flow/colored", "/geovis/depth/colored", "/tf", "/geovis/points"} & set(
        counts)
    metrics = json.loads((output / "metrics.json").read_text())
    assert "flow_ms_mean" not in metrics
    assert next(output.glob("*.db3"), None) is not None


def test_load_parameters_accepts_both_layouts_and_refuses_others(tmp_path):
    ros_file = tmp_path / "ros.yaml"
    ros_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"backend": "torch", "map_rate": 2.0}},
                                        "/geovis/pipeline_node": {"ros__parameters": {"map_rate": 5.0}},
                                        "depth_node": {"ros__parameters": {"backend": "onnxruntime"}}}))
    assert load_parameters(ros_file) == {"backend": "torch", "map_rate": 5.0}
    flat = tmp_path / "flat.yaml"
    flat.write_text("input_width: 128\n")
    assert load_parameters(flat) == {"input_width": 128}
    assert load_parameters(None) == {}
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(CommandError, match="expected a mapping"):
        load_parameters(listing)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--max-frames", "0"], "--max-frames must be >= 1"),
    (["--config", "{bad_config}"], "backend must be one of"),
])
def test_user_errors_exit_2_with_a_message(input_bag, tmp_path, capsys, arguments, message):
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("backend: warp-drive\n")
    arguments = [a.format(bad_config=bad_config) for a in arguments]
    assert main(["process-bag", str(input_bag), str(tmp_path / "out"), *arguments]) == 2
    assert message in capsys.readouterr().err


def test_missing_input_and_existing_output_are_refused(input_bag, tmp_path, capsys):
    assert main(["process-bag", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["process-bag", str(input_bag), str(input_bag)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_output_messages_decode_to_the_pipeline_values(processed):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    _, output = processed
    with AnyReader([output], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        wanted = [c for c in reader.connections
                  if c.topic in ("/geovis/depth/image", "/geovis/flow/image", "/geovis/points")]
        messages = {}
        for connection, _, raw in reader.messages(wanted):
            messages.setdefault(connection.topic, reader.deserialize(raw, connection.msgtype))
    depth = messages["/geovis/depth/image"]
    assert (depth.encoding, depth.width, depth.height, depth.step) == ("32FC1", 96, 72, 96 * 4)
    values = np.frombuffer(depth.data, "<f4").reshape(72, 96)
    assert np.isfinite(values).mean() > 0.5
    flow = messages["/geovis/flow/image"]
    assert (flow.encoding, flow.step) == ("32FC2", 96 * 8)
    points = messages["/geovis/points"]
    assert [f.name for f in points.fields] == ["x", "y", "z", "rgb"] and points.point_step == 16


# -- hostile inputs --------------------------------------------------------------------------------

FAST = {"backend": "torch", "input_width": 64, "publish_flow": False, "publish_colored": False}


def flat_config(folder, **values):
    path = folder / "fast.yaml"
    path.write_text(yaml.safe_dump({**FAST, **values}))
    return path


def leftovers(folder):
    """Hidden staging folders process-bag left beside its output."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def last_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def hostile_bag(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    frames = render_sequence(SynthConfig(scene="room", trajectory="handheld", frames=6, width=96, height=72,
                                         seed=4), with_flow=False)
    bag = write_bag(folder / "input", frames, with_depth=True)
    rewrite_messages(bag, "/camera/image_raw", [1, 4], lie_about_frame_id_length)
    return bag


def test_bad_messages_are_skipped_counted_and_summarised(hostile_bag, tmp_path, capsys):
    output = tmp_path / "out"
    assert main(["process-bag", str(hostile_bag), str(output), "--config", str(flat_config(tmp_path))]) == 0
    printed = capsys.readouterr().out
    assert "4 frames" in printed and "2 bad message(s) skipped; /camera/image_raw: 2 (first: " in printed
    assert "Invalid string length 4294967280" in printed
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["frames_out"] == 4 and metrics["bad_messages_skipped"] == 2
    assert "2 bad message(s) skipped" in (output / "report.md").read_text()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("model", ["garbage.onnx", "nan.safetensors", "missing.onnx"])
def test_bad_model_file_is_one_line_with_exit_2_and_leaves_nothing(input_bag, tmp_path, capsys, model):
    (tmp_path / "garbage.onnx").write_bytes(b"not an ONNX model")
    nan_weights = {name: torch.full_like(t, math.nan) if t.is_floating_point() else t
                   for name, t in DepthNet().state_dict().items()}
    save_file(nan_weights, str(tmp_path / "nan.safetensors"))
    output = tmp_path / "out"
    config = flat_config(tmp_path, model_depth=str(tmp_path / model))
    assert main(["process-bag", str(input_bag), str(output), "--config", str(config), "--max-frames", "2"]) == 2
    line = last_error_line(capsys.readouterr().err)
    assert line.startswith("geovis process-bag: error: ") and model in line
    assert not output.exists() and leftovers(tmp_path) == []


def test_a_failed_run_leaves_no_half_bag_and_a_rerun_works(input_bag, tmp_path, capsys, monkeypatch):
    calls = []
    run_frame = Pipeline.__call__

    def failing_on_the_third_frame(self, frame, points=True):
        calls.append(frame.stamp_ns)
        if len(calls) == 3:
            raise GeovisError("the accelerator fell off the bus")
        return run_frame(self, frame, points)

    monkeypatch.setattr(Pipeline, "__call__", failing_on_the_third_frame)
    output = tmp_path / "out"
    arguments = ["process-bag", str(input_bag), str(output), "--config", str(flat_config(tmp_path)),
                 "--max-frames", "4"]
    assert main(arguments) == 2
    line = last_error_line(capsys.readouterr().err)
    assert line.startswith("geovis process-bag: error: frame 000002 (stamp ") and "fell off the bus" in line
    assert not output.exists() and leftovers(tmp_path) == []
    monkeypatch.undo()
    assert main(arguments) == 0
    assert (output / "metadata.yaml").is_file() and (output / "report.md").is_file() and leftovers(tmp_path) == []
