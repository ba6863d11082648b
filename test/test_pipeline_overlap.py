"""Depth and flow networks overlapped on a worker thread: the same results as one after the other."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from geovis_ros.frame import Frame, PipelineResult
from geovis_ros.pipeline.pipeline import Pipeline, PipelineConfig, pipeline_config_from_parameters
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

TORCH = {"backend": "torch", "device": "cpu"}


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    rendered = render_sequence(SynthConfig(scene="room", trajectory="handheld", frames=10, width=96, height=72,
                                           seed=4), with_flow=False)
    return [Frame(f.stamp_ns, f.rgb, f.intrinsics, "cam") for f in rendered]


class _ThreadRecorder:
    """Wraps a stage and records the name of the thread each call ran on."""

    def __init__(self, stage) -> None:
        self.stage = stage
        self.threads: list[str] = []

    def __call__(self, frame: Frame):
        self.threads.append(threading.current_thread().name)
        return self.stage(frame)

    def describe(self) -> dict[str, str]:
        return self.stage.describe()

    def __getattr__(self, name: str):
        return getattr(self.stage, name)


def _run(frames: list[Frame], overlap: str) -> tuple[Pipeline, list[PipelineResult], _ThreadRecorder]:
    config = replace(pipeline_config_from_parameters(TORCH), network_overlap=overlap)
    pipeline = Pipeline(config)
    recorder = _ThreadRecorder(pipeline.flow_stage)
    pipeline.flow_stage = recorder  # type: ignore[assignment]
    return pipeline, [pipeline(frame) for frame in frames], recorder


def test_overlapped_networks_give_the_sequential_results_exactly(frames):
    _, sequential, sequential_flow = _run(frames, "off")
    _, overlapped, overlapped_flow = _run(frames, "on")
    # one after the other on the caller's thread; overlapped: on the worker from the second frame on
    # (the first frame creates the engines, which tells the pipeline that they run on the CPU)
    caller = threading.current_thread().name
    assert set(sequential_flow.threads) == {caller}
    assert overlapped_flow.threads[0] == caller
    assert all(name.startswith("geovis-networks") for name in overlapped_flow.threads[1:])
    for a, b in zip(sequential, overlapped, strict=True):
        np.testing.assert_array_equal(a.network_depth.depth, b.network_depth.depth)
        np.testing.assert_array_equal(a.depth.depth, b.depth.depth)
        np.testing.assert_array_equal(a.depth.std, b.depth.std)
        assert (a.flow is None) == (b.flow is None)
        if a.flow is not None:
            np.testing.assert_array_equal(a.flow.flow, b.flow.flow)
        np.testing.assert_array_equal(a.odometry.pose, b.odometry.pose)
        np.testing.assert_array_equal(a.odometry.covariance, b.odometry.covariance)
        np.testing.assert_array_equal(a.points.xyz, b.points.xyz)
        # each network's own time, and the overlapped section's wall time (at most their sum)
        assert {"depth", "flow", "networks", "total"} <= set(b.timings_ms)
        assert b.timings_ms["networks"] <= b.timings_ms["depth"] + b.timings_ms["flow"] + 5.0
        assert b.timings_ms["total"] >= b.timings_ms["networks"] >= b.timings_ms["depth"]


def test_a_depth_failure_waits_for_the_flow_network_and_the_stream_goes_on(frames):
    pipeline, _, recorder = _run(frames[:3], "on")
    depth_stage = pipeline.depth_stage

    def broken(frame: Frame):
        raise RuntimeError("depth engine failed")

    pipeline.depth_stage = broken  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="depth engine failed"):
        pipeline(frames[3])
    assert len(recorder.threads) == 4  # the flow network of the failed frame ran to its end
    pipeline.depth_stage = depth_stage
    result = pipeline(frames[4])
    assert result.depth is not None and result.flow is not None and result.odometry is not None


def test_reset_and_resize_keep_the_overlapped_stream_consistent(frames):
    pipeline, _, recorder = _run(frames[:3], "on")
    pipeline.reset()
    first = pipeline(frames[3])
    assert first.flow is None  # a new stream: no previous frame
    small = [Frame(f.stamp_ns, f.image[::2, ::2].copy(), replace(f.intrinsics, fx=f.intrinsics.fx / 2,
                                                                     fy=f.intrinsics.fy / 2, cx=23.75, cy=17.75,
                                                                     width=48, height=36), "cam")
             for f in frames[4:7]]
    results = [pipeline(frame) for frame in small]
    assert results[0].flow is None and results[1].flow.flow.shape == (36, 48, 2)
    assert all(name.startswith("geovis-networks") for name in recorder.threads[1:])
    assert all(r.odometry is not None and r.depth.depth.shape == (36, 48) for r in results)


def test_auto_runs_cpu_networks_in_turn_and_bad_values_are_refused(frames):
    _, results, recorder = _run(frames[:4], "auto")
    assert set(recorder.threads) == {threading.current_thread().name}  # every engine on the CPU
    assert all("networks" in r.timings_ms for r in results)
    with pytest.raises(ValueError, match="network_overlap"):
        PipelineConfig(network_overlap="always")


def test_warm_up_builds_the_engines_and_leaves_the_stream_as_it_was(frames):
    cold = Pipeline(pipeline_config_from_parameters(TORCH))
    warm = Pipeline(pipeline_config_from_parameters(TORCH))
    warm.warm_up(frames[0].intrinsics)
    assert "depth_backend" in warm.describe() and "depth_backend" not in cold.describe()  # engines exist
    assert warm.frames == 0
    for frame in frames[:5]:
        a, b = cold(frame), warm(frame)
        np.testing.assert_array_equal(a.depth.depth, b.depth.depth)
        assert (a.flow is None) == (b.flow is None)  # the grey frames are not the flow's previous frame
        if a.flow is not None:
            np.testing.assert_array_equal(a.flow.flow, b.flow.flow)
        np.testing.assert_array_equal(a.odometry.pose, b.odometry.pose)
