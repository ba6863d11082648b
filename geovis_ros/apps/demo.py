"""``geovis demo``: render a synthetic sequence, run pipeline_node as a real ROS 2 process, score it.

Steps: render a short sequence with exact ground truth (pose, depth); start
``python -m geovis_ros.nodes.pipeline_node`` as a separate process (``mode:=bag``,
``use_sim_time:=true``, ``input_qos:=reliable``) on a private ROS domain restricted to this
machine; play the frames over DDS with ``/clock``; record every output; stop the node with
SIGINT; write ``report.md``, ``metrics.json``, ``trajectory.png``, ``depth.png`` and ``map.ply``.

With ``--rate HZ`` the frames are played like a live camera instead (``mode:=live``, the node's
own clock, sensor-data QoS): wall-clock stamps every 1 / HZ s whatever the node does, so frames
the node cannot keep up with are dropped by its live queue; the summary says how many it received,
processed and dropped, and the scores cover the processed frames.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from geovis_ros.apps.run_report import (
    WARMUP_FRAMES,
    format_number,
    timing_metrics,
    trajectory_metrics,
    write_run_outputs,
)
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.errors import CommandError
from geovis_ros.eval.metrics_depth import DepthMetricsAccumulator

if TYPE_CHECKING:
    from geovis_ros.nodes.sequence_player import Recording

NAMESPACE = "/geovis"
IMAGE_TOPIC = "/camera/image_raw"
INFO_TOPIC = "/camera/camera_info"
NODE_START_TIMEOUT_S = 90.0
# The first frames build the engines (ONNX export): allow for a slow machine.
FRAME_TIMEOUT_S = 180.0
SHUTDOWN_TIMEOUT_S = 20.0
# Fewer frames leave nothing to time after the warm-up frames.
WARMUP_MIN_FRAMES = 5
# After the last result: wait this long for the final map and diagnostics.
FINAL_OUTPUTS_TIMEOUT_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``geovis demo``."""
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    parser.add_argument("--frames", type=int, default=80, help="frames to render and play (default 80)")
    parser.add_argument("--width", type=int, default=320, help="image width, pixels (default 320)")
    parser.add_argument("--height", type=int, default=240, help="image height, pixels (default 240)")
    parser.add_argument("--scene", default="room", help="synthetic scene (default room)")
    parser.add_argument("--trajectory", default="handheld", help="camera trajectory kind (default handheld)")
    parser.add_argument("--seed", type=int, default=3, help="scene seed (default 3)")
    parser.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "torch", "onnxruntime"),
                        help="inference backend of the node (default auto)")
    parser.add_argument("--in-flight", type=int, default=1,
                        help="frames sent ahead of their results (default 1: lockstep, latency without queueing)")
    parser.add_argument("--rate", type=float, default=0.0, metavar="HZ",
                        help="play like a live camera at HZ frames/s (node in live mode, drops counted); "
                             "default 0: lockstep, every frame processed")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID to use (default: a random private one in 1..100)")


def pipeline_node_command(parameters: Mapping[str, Any], namespace: str = NAMESPACE,
                          image_topic: str = IMAGE_TOPIC, info_topic: str = INFO_TOPIC) -> list[str]:
    """The command line starting pipeline_node with ``parameters`` (name -> value), remapped to the topics."""
    command = [sys.executable, "-m", "geovis_ros.nodes.pipeline_node", "--ros-args", "-r", f"__ns:={namespace}",
               "-r", f"image:={image_topic}", "-r", f"camera_info:={info_topic}"]
    for name, value in parameters.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        command += ["-p", f"{name}:={text}"]
    return command


def local_ros_environment(domain_id: int | None = None) -> dict[str, str]:
    """``os.environ`` with DDS discovery kept on this machine and a private ROS_DOMAIN_ID."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else random.randint(1, 100))
    return env


def start_node(command: list[str], env: Mapping[str, str], log: IO[str]) -> subprocess.Popen[str]:
    """Start a node process writing stdout and stderr to ``log``."""
    return subprocess.Popen(command, env=dict(env), stdout=log, stderr=subprocess.STDOUT, text=True)


def stop_node(process: subprocess.Popen[str], timeout_s: float = SHUTDOWN_TIMEOUT_S) -> int:
    """SIGINT the node and wait for it (SIGKILL after ``timeout_s``); returns its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def render_frames(args: argparse.Namespace) -> list[SequenceFrame]:
    """The synthetic sequence (rgb, depth, pose) the demo plays."""
    from geovis_ros.synthetic.scenes import SynthConfig, SynthConfigError, render_sequence

    try:
        config = SynthConfig(scene=args.scene, trajectory=args.trajectory, frames=args.frames, width=args.width,
                             height=args.height, seed=args.seed)
    except SynthConfigError as err:
        raise CommandError(str(err)) from None
    return list(render_sequence(config, with_flow=False))


def demo_metrics(frames: list[SequenceFrame], recording: Recording) -> tuple[dict[str, Any], Any]:
    """metrics.json of a played sequence and the trajectory evaluation (for the plot)."""
    with_pose = [f for f in frames if f.pose is not None]
    est_stamps = sorted(recording.odometry)
    trajectory, evaluation = trajectory_metrics(
        [f.stamp_ns for f in with_pose], np.array([f.pose for f in with_pose]).reshape(-1, 4, 4), est_stamps,
        np.array([recording.odometry[s][0] for s in est_stamps]).reshape(-1, 4, 4))
    depth = DepthMetricsAccumulator()
    for frame in frames:
        if frame.depth is not None and frame.stamp_ns in recording.depth:
            depth.add(frame.depth, recording.depth[frame.stamp_ns])
    depth_scores = depth.result()
    done = sorted(recording.done_s.items(), key=lambda item: item[1])
    timing = timing_metrics([(t - recording.sent_s[s]) * 1000.0 for s, t in done], [t for _, t in done])
    diagnostics = recording.diagnostics
    backend = diagnostics.get("depth_backend", "unknown")
    metrics: dict[str, Any] = {
        "frames_in": len(recording.sent_s),
        "frames_out": len(recording.odometry),
        "ate_rmse_m": trajectory["ate_rmse_m"],
        "trajectory_length_m": trajectory["trajectory_length_m"],
        "ate_pct_of_length": trajectory["ate_pct_of_length"],
        "rpe_trans_pct": trajectory["rpe_trans_pct"],
        "estimated_length_m": trajectory["estimated_length_m"],
        "depth_absrel": depth_scores["abs_rel"],
        "depth_a1": depth_scores["a1"],
        "fps": timing["fps"],
        "latency_ms_p50": timing["latency_ms_p50"],
        "latency_ms_p99": timing["latency_ms_p99"],
        "backend": f"{backend}-{diagnostics.get('depth_device', '?')}" if backend != "unknown" else backend,
        "dropped_frames": int(diagnostics.get("dropped_frames", -1)),
        "rejected_frames": int(diagnostics.get("rejected_frames", -1)),
        "failed_frames": int(diagnostics.get("failed_frames", -1)),
        "keyframes": int(diagnostics.get("keyframes", 0)),
        "map_points": 0 if recording.map is None else len(recording.map.xyz),
        # the node's own stage timings of the last frame (from /diagnostics)
        **{f"last_frame_{key}": float(value) for key, value in diagnostics.items() if key.endswith("_ms")},
    }
    return metrics, evaluation


@dataclass
class DemoRun:
    """Everything one demo run produced (the files are already written)."""

    frames: list[SequenceFrame]
    recording: Recording
    metrics: dict[str, Any]
    written: dict[str, Path]
    node_log: str


def run(args: argparse.Namespace) -> int:
    """Render, play through a real pipeline_node process, score, write the report, print a summary."""
    demo = run_demo(args)
    _print_summary(demo.metrics, demo.written)
    return 0


def run_demo(args: argparse.Namespace) -> DemoRun:
    """The demo without the summary; raises CommandError when the node fails or exits uncleanly."""
    started = time.monotonic()
    if args.frames < WARMUP_MIN_FRAMES:
        raise CommandError(f"--frames must be at least {WARMUP_MIN_FRAMES} (the first frames build the engines)")
    if args.in_flight < 1:
        raise CommandError(f"--in-flight must be >= 1, got {args.in_flight}")
    if not (args.rate >= 0 and math.isfinite(args.rate)):
        raise CommandError(f"--rate must be a frame rate >= 0 (0: lockstep), got {args.rate}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    env = local_ros_environment(args.domain_id)
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")})
    print(f"geovis demo: rendering {args.frames} frames {args.width}x{args.height} ({args.scene}/{args.trajectory})")
    frames = render_frames(args)
    playing = {"mode": "live", "use_sim_time": False} if args.rate else {
        "mode": "bag", "use_sim_time": True, "input_qos": "reliable"}
    parameters = {**playing, "backend": args.backend, "input_width": min(args.width, 320),
                  "input_height": min(args.height, 240), "map_rate": 2.0}
    command = pipeline_node_command(parameters)
    log_path = out / "pipeline_node.log"
    print(f"geovis demo: starting pipeline_node (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, log {log_path})")
    from geovis_ros.nodes.sequence_player import run_player

    with log_path.open("w") as log:
        process = start_node(command, env, log)
        try:
            recording = run_player(lambda player: _play(player, frames, process, args.in_flight, args.rate))
        finally:
            status = stop_node(process)
    log_text = log_path.read_text()
    if status != 0 or "Traceback" in log_text:
        raise CommandError(f"pipeline_node exited with status {status}; see {log_path}")
    metrics, evaluation = demo_metrics(frames, recording)
    metrics["elapsed_s"] = time.monotonic() - started
    metrics["rate_hz"] = args.rate
    metrics["node_frames_in"] = int(recording.diagnostics.get("frames_in", -1))
    middle = frames[len(frames) // 2]
    depth_example = (middle.depth, recording.depth[middle.stamp_ns]) if (
        middle.depth is not None and middle.stamp_ns in recording.depth) else None
    if args.rate:
        latency = f"image published -> odom received (wall clock, DDS included), live camera at {args.rate:g} Hz"
    else:
        latency = ("image published -> odom received (wall clock, DDS included), one frame in flight" if
                   args.in_flight == 1 else f"includes queueing: {args.in_flight} frames in flight")
    details = [
        f"Sequence: synthetic `{args.scene}/{args.trajectory}`, {args.frames} frames {args.width}x{args.height}, "
        f"seed {args.seed}; node command: `{' '.join(command[1:])}`.",
        f"ATE: SE(3) alignment, no scale correction. Latency: {latency}; the first {WARMUP_FRAMES} frames "
        "(engine build) are left out.",
    ]
    written = write_run_outputs(out, "geovis demo", metrics, details, evaluation, depth_example, recording.map)
    return DemoRun(frames, recording, metrics, written, log_text)


def _play(player: Any, frames: list[SequenceFrame], process: subprocess.Popen[str], in_flight: int,
          rate_hz: float) -> None:
    """Wait for the node, play the frames (lockstep, or paced at ``rate_hz`` > 0), wait for the final outputs.

    The player's recording ends up keyed by the frames' own stamps (a paced play stamps by the wall clock).
    """
    if not player.wait_for_played_node(NODE_START_TIMEOUT_S) or process.poll() is not None:
        raise CommandError(f"pipeline_node did not come up within {NODE_START_TIMEOUT_S:.0f} s")

    def progress(sent: int) -> None:
        if sent % 10 == 0 or sent == len(frames):
            print(f"  played {sent}/{len(frames)} frames", flush=True)

    recording = player.recording
    if rate_hz:
        sent = player.play_paced(frames, rate_hz, settle_s=FINAL_OUTPUTS_TIMEOUT_S, progress=progress)
        # /diagnostics (once a second) catch up with the last result received
        player.spin_until(lambda: recording.map is not None and live_settled(recording.diagnostics)
                          and recording.diagnostics.get("frames_out") == str(len(recording.odometry)),
                          FINAL_OUTPUTS_TIMEOUT_S)
        own_stamps = {wall: frame.stamp_ns for wall, frame in zip(sent, frames, strict=True)}
        player.recording = restamped(recording, own_stamps)
        return
    try:
        player.play(frames, window=in_flight, frame_timeout_s=FRAME_TIMEOUT_S, progress=progress)
    except TimeoutError as err:
        raise CommandError(f"{err} (pipeline_node {'exited' if process.poll() is not None else 'stalled'})") from None
    player.spin_until(lambda: recording.map is not None
                      and recording.diagnostics.get("frames_out") == str(len(frames)), FINAL_OUTPUTS_TIMEOUT_S)


def live_settled(diagnostics: Mapping[str, str]) -> bool:
    """Whether a live node has finished with every image it received (processed, dropped, failed or refused)."""
    finished = sum(int(diagnostics.get(key, "0")) for key in (
        "frames_out", "dropped_frames", "failed_frames", "rejected_frames", "waiting_for_camera_info_frames"))
    return finished == int(diagnostics.get("frames_in", "-1")) and diagnostics.get("queued_frames") == "0"


def restamped(recording: Recording, stamps: Mapping[int, int]) -> Recording:
    """``recording`` with its per-frame entries (sent, done, depth, odometry) re-keyed by ``stamps`` (old -> new ns).

    Entries under stamps not in ``stamps`` are dropped.
    """
    def rekey(values: Mapping[int, Any]) -> dict[int, Any]:
        return {stamps[stamp]: value for stamp, value in values.items() if stamp in stamps}

    return replace(recording, sent_s=rekey(recording.sent_s), done_s=rekey(recording.done_s),
                   depth=rekey(recording.depth), odometry=rekey(recording.odometry))


def _print_summary(metrics: dict[str, Any], written: dict[str, Path]) -> None:
    def number(key: str, unit: str = "", digits: int = 3) -> str:
        return format_number(metrics[key], unit, digits)

    print(f"geovis demo: {metrics['frames_out']}/{metrics['frames_in']} frames, backend {metrics['backend']}")
    if metrics.get("rate_hz"):
        print(f"  live camera at {metrics['rate_hz']:g} Hz: node received {metrics['node_frames_in']}, "
              f"processed {metrics['frames_out']}, dropped {metrics['dropped_frames']}")
    print(f"  ATE {number('ate_rmse_m', ' m')} over {number('trajectory_length_m', ' m', 2)} of trajectory, "
          f"depth AbsRel {number('depth_absrel')}")
    print(f"  {number('fps', ' frames/s', 2)}, latency p50 {number('latency_ms_p50', ' ms', 0)}, "
          f"p99 {number('latency_ms_p99', ' ms', 0)}; map {metrics['map_points']} points")
    print(f"  wrote {', '.join(str(p) for p in written.values())} in {metrics['elapsed_s']:.0f} s")
