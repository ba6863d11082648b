"""Which parameters change at run time: the table, the README and the node's set-time validation agree."""

import re
from pathlib import Path

import pytest
import rclpy
from rclpy.parameter import Parameter

from geovis_ros.nodes.params import PARAMS, declare_parameters

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = [spec.name for spec in PARAMS if not spec.read_only]


def test_readme_names_exactly_the_runtime_parameters():
    text = (ROOT / "README.md").read_text()
    sentence = re.search(r"Settable at run time with\s+`ros2 param set` \(validated before they apply\): ([^.]+)\.",
                         text)
    assert sentence, "the README's Parameters section must list the runtime-settable parameters"
    assert re.findall(r"`(\w+)`", sentence.group(1)) == RUNTIME


@pytest.fixture
def node():
    rclpy.init()
    node = rclpy.create_node("runtime_param_test")
    declare_parameters(node)
    yield node
    node.destroy_node()
    rclpy.shutdown()


def test_runtime_parameters_change_within_bounds_and_others_stay_read_only(node):
    changes = {"publish_depth": False, "publish_points": False, "publish_colored": False, "publish_tf": False,
               "publish_map_tf": False, "map_rate": 5.0, "min_output_rate": 2.0, "max_delay": 0.5,
               "lost_frames_error": 3}
    assert set(changes) == set(RUNTIME)
    for name, value in changes.items():
        assert node.set_parameters([Parameter(name, value=value)])[0].successful, name
        assert node.get_parameter(name).value == value
    bad = node.set_parameters([Parameter("map_rate", value=100.0)])[0]
    assert not bad.successful and bad.reason == "Parameter map_rate out of range Min: 0.01, Max: 30.0, value: 100.0"
    assert not node.set_parameters([Parameter("lost_frames_error", value=0)])[0].successful
    assert not node.set_parameters([Parameter("publish_tf", value="yes")])[0].successful
    for name, value in {"mode": "bag", "base_frame": "body", "publish_flow": False, "bag_queue_mb": 64}.items():
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and "read-only" in result.reason, name
