"""The parameter table, config/geovis.yaml and the README never drift apart; node-side validation."""

import re
from pathlib import Path

import pytest
import rclpy
import yaml
from rclpy.parameter import Parameter

from geovis_ros.nodes.params import PARAMS, declare_parameters

ROOT = Path(__file__).resolve().parents[1]


def test_config_yaml_mirrors_declared_parameters():
    params = yaml.safe_load((ROOT / "config" / "geovis.yaml").read_text())["/**"]["ros__parameters"]
    assert params == {spec.name: spec.default for spec in PARAMS}


def test_readme_parameter_table_lists_every_parameter_with_its_default():
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", (ROOT / "README.md").read_text(), re.M))
    for spec in PARAMS:
        assert spec.name in rows, spec.name
        shown = rows[spec.name].strip().strip("`")
        if isinstance(spec.default, bool):
            expected = str(spec.default).lower()
        else:
            expected = str(spec.default) if spec.default != "" else '""'
        assert shown == expected, spec.name


@pytest.fixture
def node():
    rclpy.init()
    node = rclpy.create_node("param_test")
    yield node
    node.destroy_node()
    rclpy.shutdown()


def test_declared_with_descriptors_and_defaults(node):
    values = declare_parameters(node)
    assert values["backend"] == "auto" and values["input_width"] == 320
    descriptor = node.describe_parameter("backend")
    assert "tensorrt" in descriptor.additional_constraints and descriptor.description


def test_invalid_values_rejected_at_set_time_with_reason(node):
    declare_parameters(node)
    result = node.set_parameters([Parameter("publish_tf", Parameter.Type.BOOL, False)])
    assert result[0].successful
    # read-only parameters cannot change after start; constrained ones never take bad values
    assert not node.set_parameters([Parameter("mode", Parameter.Type.STRING, "fast")])[0].successful


def test_bad_override_at_start_names_parameter():
    rclpy.init()
    try:
        node = rclpy.create_node("bad", parameter_overrides=[Parameter("mode", Parameter.Type.STRING, "fast")])
        with pytest.raises(ValueError, match="mode must be one of live, bag"):
            declare_parameters(node)
        node.destroy_node()
    finally:
        rclpy.shutdown()
