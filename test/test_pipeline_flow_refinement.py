"""flow_refinement: the learned flow refinement runs only where chosen; otherwise its seeded-DIS initialisation."""

import numpy as np
import pytest

from geovis_ros.frame import Frame
from geovis_ros.inference.card_runtime import model_inputs
from geovis_ros.inference.engine import EngineConfig
from geovis_ros.models.cards import CardError
from geovis_ros.models.flow import initial_flow
from geovis_ros.pipeline.networks import FlowStage, NetworkConfig, resolve_flow_refinement
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

TORCH_CPU = EngineConfig(backend="torch", device="cpu")


@pytest.fixture(scope="module")
def frames():
    """Three consecutive rendered 320x240 frames (a real camera motion between them)."""
    rendered = render_sequence(SynthConfig(scene="room", trajectory="handheld", frames=3, width=320, height=240,
                                           seed=3), with_flow=False)
    return [Frame(f.stamp_ns, f.rgb, f.intrinsics, "cam") for f in rendered]


def _flows(frames, refinement):
    stage = FlowStage(NetworkConfig(engine=TORCH_CPU, flow_refinement=refinement))
    assert stage(frames[0]) is None
    result = stage(frames[1])
    assert result is not None and result.previous_stamp_ns == frames[0].stamp_ns
    return stage, result.flow


def test_flow_refinement_is_validated():
    with pytest.raises(ValueError, match="flow_refinement must be one of auto, network, initialisation"):
        NetworkConfig(flow_refinement="dis")


def test_auto_runs_the_initialisation_on_cpu_and_explicit_choices_win():
    stage = FlowStage(NetworkConfig(engine=TORCH_CPU))
    assert not stage.refine
    for refinement, runs in (("network", True), ("initialisation", False)):
        assert resolve_flow_refinement(NetworkConfig(engine=TORCH_CPU, flow_refinement=refinement),
                                       stage.spec, True) is runs


def test_a_network_without_flow_init_always_runs_and_refuses_initialisation():
    stage = FlowStage(NetworkConfig(engine=TORCH_CPU))
    assert resolve_flow_refinement(NetworkConfig(engine=TORCH_CPU), stage.spec, False)
    with pytest.raises(CardError, match="has no flow_init input"):
        resolve_flow_refinement(NetworkConfig(engine=TORCH_CPU, flow_refinement="initialisation"), stage.spec, False)


def test_initialisation_is_the_seeded_dis_flow_and_no_engine_is_built(frames):
    stage, flow = _flows(frames, "initialisation")
    assert flow.dtype == np.float32 and flow.shape == (240, 320, 2)
    # DIS runs multi-threaded: the same call agrees to ~1e-7 px, not bit for bit, once other tests ran OpenCV
    np.testing.assert_allclose(flow, initial_flow(frames[0].image, frames[1].image), rtol=0, atol=1e-4)
    described = stage.describe()
    assert (described["flow_backend"], described["flow_device"], described["flow_refinement"]) == (
        "opencv-dis", "cpu", "initialisation")
    assert "flow_engines" not in described


def test_network_refines_the_same_initialisation(frames):
    stage, flow = _flows(frames, "network")
    init = initial_flow(frames[0].image, frames[1].image)
    assert flow.shape == init.shape and np.isfinite(flow).all()
    difference = np.abs(flow - init)
    assert difference.max() > 0  # the network ran and changed something
    assert float(np.median(difference)) < 1.0  # a refinement of that initialisation, not another flow
    described = stage.describe()
    assert (described["flow_backend"], described["flow_refinement"]) == ("torch", "network")


def test_network_mode_normalises_each_frame_once_with_the_same_flow(frames):
    """Frame 1's image2 tensor is reused as image1 for frame 2: the same values, the same flow as a fresh stage."""
    stage = FlowStage(NetworkConfig(engine=TORCH_CPU, flow_refinement="network"))
    assert stage._reuse_image2  # the shipped card normalises image1 and image2 alike
    streamed = [stage(frame) for frame in frames][-1]
    image, plan, tensor = stage._image2_tensor
    assert image is frames[2].image
    names = stage.model.names
    fresh_inputs = model_inputs(stage.model.card, names, {"image1": frames[2].image, "image2": frames[2].image},
                                plan, frames[2].intrinsics)
    np.testing.assert_array_equal(tensor, fresh_inputs[names["image1"]])
    fresh = FlowStage(NetworkConfig(engine=TORCH_CPU, flow_refinement="network"))
    fresh(frames[1])
    expected = fresh(frames[2])
    assert streamed is not None and expected is not None
    # same inputs; torch's CPU kernels are not bit-exact from run to run (a few pixels move by ~0.02 px)
    difference = np.abs(streamed.flow - expected.flow)
    assert float(np.median(difference)) < 1e-4 and float(difference.max()) < 0.1
    stage.reset()
    assert stage._image2_tensor is None and stage(frames[0]) is None
