"""pipeline_node in-process with real rclpy over DDS, running a Depth Anything V2 and a RAFT-like ONNX
(random weights, exported as upstream does) chosen by parameters only: model files and model cards."""

from __future__ import annotations

import numpy as np
import pytest
from real_architectures import DA_SIZE, export_depth_anything, export_raft
from test_nodes_stages import OUTPUT_TYPES, H, K, W, ros  # noqa: F401 - ros: the stage tests' rclpy harness

from geovis_ros.models.cards import CardError
from geovis_ros.nodes.pipeline_node import PipelineNode
from geovis_ros.ros.image import depth_from_image, numpy_from_image

pytest.importorskip("transformers")
# The node's image topics (the stage tests' table follows the message contract: depth/image, flow/image).
DEPTH, FLOW = (next(t for t in (f"{kind}/image", kind) if t in OUTPUT_TYPES) for kind in ("depth", "flow"))


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    directory = tmp_path_factory.mktemp("node_zoo")
    da, _ = export_depth_anything(directory)
    da.with_suffix(".yaml").write_text(f"base: depth_anything_v2\nsize: {{fixed: [{DA_SIZE[0]}, {DA_SIZE[1]}]}}\n")
    raft, _ = export_raft(directory)
    return da, raft


def test_pipeline_node_runs_user_networks_from_parameters(ros, onnx_models):  # noqa: F811 - the fixture
    da, raft = onnx_models
    probe = ros.start(PipelineNode, "/card_models_test", backend="onnxruntime", model_depth=str(da),
                      model_flow=str(raft), model_flow_card="raft", input_width=64, publish_tf=False)
    probe.send_info()
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (H, W + 8, 3), dtype=np.uint8)
    for i in range(3):
        probe.send_image(1_000_000_000 + i * 100_000_000, np.ascontiguousarray(scene[:, 2 * i:2 * i + W]))
        assert probe.wait(DEPTH, i + 1) and (i == 0 or probe.wait(FLOW, i))
    depth = depth_from_image(probe.received[DEPTH][-1])
    assert depth.shape == (H, W) and np.isfinite(depth).mean() > 0.5 and np.nanmin(depth) > 0
    flow = numpy_from_image(probe.received[FLOW][-1])
    assert flow.shape == (H, W, 2) and np.isfinite(flow).all()
    described = probe.node.pipeline.describe()
    assert described["flow_card"] == "raft" and described["depth_card"].endswith(".yaml")
    assert probe.node.failed_frames == 0 and K.width == W


def test_pipeline_node_refuses_a_card_that_does_not_fit_at_start(ros, onnx_models):  # noqa: F811
    da, _ = onnx_models
    with pytest.raises(CardError, match="size.fixed: input 'pixel_values'"):
        ros.start(PipelineNode, "/card_mismatch_test", backend="onnxruntime", model_depth=str(da),
                  model_depth_card="depth_anything_v2")
