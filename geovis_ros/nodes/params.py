"""Every node parameter in one table: typed default, description, allowed values.

The table drives the rclpy declarations (with ParameterDescriptor), validation at set time,
``config/geovis.yaml`` and the README's parameter table (tests keep all three in sync).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, typed default, description, and its constraint (if any)."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    read_only: bool = True

    def check(self, value: Any) -> str | None:
        """Reason ``value`` is not acceptable, or None when it is."""
        if type(value) is not type(self.default):
            return f"{self.name} must be {type(self.default).__name__}, got {type(value).__name__}"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; got '{value}'"
        if self.min_value is not None and value < self.min_value:
            return f"{self.name} must be >= {self.min_value}; got {value}"
        if self.max_value is not None and value > self.max_value:
            return f"{self.name} must be <= {self.max_value}; got {value}"
        return None


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("backend", "auto", "inference backend", ("auto", "tensorrt", "torch", "onnxruntime")),
    ParamSpec("device", "auto", "inference device", ("auto", "cpu", "cuda")),
    ParamSpec("precision", "fp16", "network precision on GPU (CPU runs fp32)", ("fp32", "fp16", "int8")),
    ParamSpec("engine_cache_dir", "", "TensorRT engine cache; empty = ~/.cache/geovis_ros/engines"),
    ParamSpec("model_depth", "", "depth model (.safetensors or .onnx); empty = shipped default"),
    ParamSpec("model_flow", "", "flow model (.safetensors or .onnx); empty = shipped default"),
    ParamSpec("model_pose", "", "pose model (.safetensors or .onnx) for motion_prior pose_network; empty = shipped "
              "default"),
    ParamSpec("input_width", 320, "network input width, pixels (flow and user depth models; the shipped depth "
              "network runs at its training width)",
              min_value=32, max_value=4096),
    ParamSpec("input_height", 240, "network input height, pixels", min_value=32, max_value=4096),
    ParamSpec("mode", "live", "live: keep only the newest frame; bag: every frame in order", ("live", "bag")),
    ParamSpec("input_qos", "sensor_data", "QoS of the image/camera_info subscriptions",
              ("sensor_data", "reliable")),
    ParamSpec("use_compressed", False, "subscribe image/compressed (jpeg/png) instead of image"),
    ParamSpec("publish_depth", True, "publish depth, depth/camera_info and depth/uncertainty"),
    ParamSpec("publish_flow", True, "publish flow"),
    ParamSpec("publish_points", True, "publish the per-frame point cloud"),
    ParamSpec("publish_colored", True, "publish depth/colored and flow/colored images for people"),
    ParamSpec("publish_tf", True, "broadcast odom -> camera TF (when tf2_ros is installed)", read_only=False),
    ParamSpec("odom_frame", "odom", "fixed frame of odometry, path and map"),
    ParamSpec("camera_frame", "", "camera frame id; empty = frame_id of the input image"),
    ParamSpec("odometry_method", "direct", "tracking: direct photometric or feature-based baseline",
              ("direct", "features")),
    ParamSpec("motion_prior", "constant_velocity", "odometry's initial guess per frame: constant velocity or the "
              "pose network", ("constant_velocity", "pose_network")),
    ParamSpec("map_rate", 1.0, "map publishing rate, Hz", min_value=0.01, max_value=30.0),
    ParamSpec("map_voxel_size", 0.05, "map voxel size, metres", min_value=0.005, max_value=5.0),
    ParamSpec("map_max_points", 500000, "hard bound on map points", min_value=1000, max_value=50_000_000),
    ParamSpec("points_stride", 2, "per-frame cloud uses every Nth pixel", min_value=1, max_value=32),
)

PARAMS_BY_NAME = {spec.name: spec for spec in PARAMS}


def declare_parameters(node: Node, names: list[str] | None = None) -> dict[str, Any]:
    """Declare the named parameters (all by default) on ``node``; return their values.

    Values that break a constraint raise ValueError naming the parameter. Later changes are
    validated by an on-set callback that rejects them with the same reason.
    """
    specs = [PARAMS_BY_NAME[n] for n in names] if names is not None else list(PARAMS)
    for spec in specs:
        descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
        if spec.choices:
            descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
        low, high = spec.min_value, spec.max_value
        if low is not None and high is not None and not isinstance(spec.default, bool):
            if isinstance(spec.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
            else:
                descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
        node.declare_parameter(spec.name, spec.default, descriptor)
    values = {spec.name: node.get_parameter(spec.name).value for spec in specs}
    for spec in specs:
        reason = spec.check(values[spec.name])
        if reason:
            raise ValueError(f"invalid parameter: {reason}")
    node.add_on_set_parameters_callback(_validator(specs))
    return values


def _validator(specs: list[ParamSpec]) -> Callable[[list[Parameter]], SetParametersResult]:
    by_name = {spec.name: spec for spec in specs}

    def validate(parameters: list[Parameter]) -> SetParametersResult:
        for parameter in parameters:
            spec = by_name.get(parameter.name)
            reason = spec.check(parameter.value) if spec else None
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    return validate
