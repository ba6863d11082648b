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
    ParamSpec("model_depth_card", "", "model card of model_depth: a preset name (geovis models) or a card file; "
              "empty = <model>.yaml beside the ONNX, else the shipped card"),
    ParamSpec("model_flow_card", "", "model card of model_flow: a preset name (geovis models) or a card file; "
              "empty = <model>.yaml beside the ONNX, else the shipped card"),
    ParamSpec("flow_refinement", "auto", "flow networks with a flow_init input (the shipped one): network runs the "
              "learned refinement, initialisation returns its seeded-DIS initialisation, auto: the initialisation on "
              "a CPU backend, the network on a GPU", ("auto", "network", "initialisation")),
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
    ParamSpec("max_image_pixels", 4096 * 4096, "compressed images declaring more pixels (or more than 4x the "
              "camera_info size) are refused before decoding", min_value=1024, max_value=1 << 30),
    ParamSpec("bag_queue_mb", 512, "bag mode: megabytes of images held for the worker; beyond it the oldest are "
              "dropped, counted and logged", min_value=16, max_value=65536),
    ParamSpec("publish_depth", True, "publish depth/image, depth/camera_info and depth/uncertainty",
              read_only=False),
    ParamSpec("publish_flow", True, "publish flow/image (off: the flow network is not loaded)"),
    ParamSpec("publish_points", True, "publish the per-frame point cloud", read_only=False),
    ParamSpec("publish_colored", True, "publish depth/colored and flow/colored images for people", read_only=False),
    ParamSpec("publish_tf", True, "broadcast odom -> base_frame TF (when tf2_ros is installed)", read_only=False),
    ParamSpec("publish_map_tf", True, "broadcast the loop-closure correction map -> odom TF (mapping nodes, when "
              "tf2_ros is installed)", read_only=False),
    ParamSpec("odom_frame", "odom", "REP 105 odometry frame: parent of base_frame, continuous"),
    ParamSpec("base_frame", "base_link", "REP 105 robot body frame: child frame of odometry and of the odom TF"),
    ParamSpec("map_frame", "map", "frame of the fused map and keyframes; map -> odom carries loop-closure "
              "corrections"),
    ParamSpec("camera_frame", "", "camera frame id; empty = frame_id of the input image"),
    ParamSpec("camera_extrinsic", [0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5], "camera (optical frame) pose in "
              "base_frame, x y z qx qy qz qw, used when TF has no base_frame -> camera transform; default: the "
              "REP 103 optical rotation at the base origin"),
    ParamSpec("tf_timeout", 5.0, "seconds the first frame waits for TF base_frame -> camera before "
              "camera_extrinsic is used", min_value=0.0, max_value=60.0),
    ParamSpec("odometry_method", "direct", "tracking: direct photometric or feature-based baseline",
              ("direct", "features")),
    ParamSpec("motion_prior", "constant_velocity", "odometry's initial guess per frame: constant velocity or the "
              "pose network", ("constant_velocity", "pose_network")),
    ParamSpec("map_rate", 1.0, "map publishing rate, Hz", min_value=0.01, max_value=30.0, read_only=False),
    ParamSpec("map_voxel_size", 0.05, "map voxel size, metres", min_value=0.005, max_value=5.0),
    ParamSpec("map_max_points", 500000, "hard bound on map points", min_value=1000, max_value=50_000_000),
    ParamSpec("points_stride", 2, "per-frame cloud uses every Nth pixel", min_value=1, max_value=32),
    ParamSpec("points_confidence", 1.5, "per-frame cloud keeps pixels whose relative depth std is at most this "
              "times the frame's median (relative to the depth source; or within 10 %)", min_value=0.0,
              max_value=100.0),
    ParamSpec("camera_height", 0.0, "camera height above the ground, metres: metric scale from the ground plane "
              "(0 = off; see ground_frame)", min_value=0.0, max_value=100.0),
    ParamSpec("ground_frame", "base_footprint", "TF frame on the ground: with tf2_ros and camera_height 0, the "
              "camera's height above it sets camera_height"),
    ParamSpec("min_output_rate", 0.5, "/diagnostics WARN below this output rate while images arrive, Hz "
              "(0 = not checked)", min_value=0.0, max_value=1000.0, read_only=False),
    ParamSpec("max_delay", 2.0, "/diagnostics WARN when outputs lag their input stamp by more, seconds",
              min_value=0.01, max_value=3600.0, read_only=False),
    ParamSpec("lost_frames_error", 10, "/diagnostics ERROR after this many consecutive frames with tracking lost",
              min_value=1, max_value=100000, read_only=False),
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
