"""pipeline_node in ``live`` mode fed like a camera: wall-clock stamps at a fixed rate, no waiting for results.

The node runs as its own process on this test run's private ROS domain (localhost only); the
player (:meth:`SequencePlayer.play_paced`) sends a small synthetic sequence at 5 Hz and the node's
/diagnostics account for every image: processed, or dropped by the live queue (depth 1, newest kept).
"""

import argparse
import math
import os
import time

import pytest

from geovis_ros.apps.demo import (
    add_arguments,
    live_settled,
    local_ros_environment,
    pipeline_node_command,
    run_demo,
    start_node,
    stop_node,
)
from geovis_ros.errors import CommandError
from geovis_ros.nodes.sequence_player import run_player
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

FRAMES, RATE_HZ = 16, 5.0
PARAMETERS = {"mode": "live", "use_sim_time": False, "backend": "torch", "input_width": 96}


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    frames = list(render_sequence(SynthConfig(scene="room", trajectory="handheld", frames=FRAMES, width=96,
                                              height=72, seed=6), with_flow=False))
    env = local_ros_environment(int(os.environ["ROS_DOMAIN_ID"]))  # conftest's private domain
    log_path = tmp_path_factory.mktemp("live") / "pipeline_node.log"
    timing: dict[str, float] = {}

    def play(player) -> None:
        assert player.wait_for_played_node(90.0), "pipeline_node did not come up"
        started = time.monotonic()
        timing["sent"] = len(player.play_paced(frames, RATE_HZ, settle_s=20.0))
        timing["seconds"] = time.monotonic() - started
        recording = player.recording  # its diagnostics (once a second) catch up with the last odometry
        player.spin_until(lambda: live_settled(recording.diagnostics)
                          and recording.diagnostics["frames_out"] == str(len(recording.odometry)), 10.0)

    with log_path.open("w") as log:
        process = start_node(pipeline_node_command(PARAMETERS), env, log)
        try:
            recording = run_player(play)
        finally:
            status = stop_node(process)
    return recording, timing, status, log_path.read_text()


def test_paced_frames_are_stamped_by_the_wall_clock_at_the_rate(live_run):
    recording, timing, status, log = live_run
    assert status == 0 and "Traceback" not in log, log
    assert timing["sent"] == FRAMES
    # 1 s camera_info lead, then one frame every 0.2 s: the player never waits for the node
    assert (FRAMES - 1) / RATE_HZ <= timing["seconds"] - 1.0 < (FRAMES - 1) / RATE_HZ + 3.0
    stamps = sorted(recording.sent_s)
    assert abs(stamps[-1] * 1e-9 - time.time()) < 120.0  # wall clock, not the sequence's stamps
    gaps = [(b - a) * 1e-9 for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) > 0.5 / RATE_HZ


def test_live_node_accounts_for_every_image(live_run):
    recording, _, _, _ = live_run
    diagnostics = recording.diagnostics
    # best-effort (sensor data) input: DDS itself may lose an image on a busy machine
    received = int(diagnostics["frames_in"])
    assert diagnostics["mode"] == "live" and FRAMES - 3 <= received <= FRAMES
    assert live_settled(diagnostics) and diagnostics["failed_frames"] == "0", diagnostics
    # the first frame builds the engines (seconds): the images meanwhile are dropped, the newest kept
    processed = int(diagnostics["frames_out"])
    assert processed >= 3 and len(recording.odometry) == processed
    assert set(recording.odometry) <= set(recording.sent_s)


def test_demo_as_a_live_camera_scores_the_processed_frames_and_counts_the_drops(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path), "--frames", "12", "--width", "96", "--height", "72",
                              "--backend", "torch", "--rate", str(RATE_HZ), "--domain-id", os.environ["ROS_DOMAIN_ID"]])
    demo = run_demo(args)
    metrics = demo.metrics
    assert metrics["rate_hz"] == RATE_HZ and metrics["frames_in"] == 12
    # wall-clock stamps were mapped back to the frames' own: results are scored against ground truth
    assert set(demo.recording.odometry) <= {frame.stamp_ns for frame in demo.frames}
    assert metrics["frames_out"] == len(demo.recording.odometry) >= 3 and math.isfinite(metrics["ate_rmse_m"])
    assert metrics["frames_out"] + metrics["dropped_frames"] <= metrics["node_frames_in"] <= 12
    with pytest.raises(CommandError, match="--rate"):
        run_demo(parser.parse_args(["--out", str(tmp_path), "--rate", "-5"]))
