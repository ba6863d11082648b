"""ONNX Runtime backend: CPU execution provider tuned for latency, CUDA EP where installed.

CPU settings: intra-op threads = physical cores available to this process (hyper-threads and
cgroup limits accounted for), one inter-op thread, sequential execution, all graph optimisations.
Inputs are handed to ONNX Runtime without copies when they are C-contiguous and of the right dtype.
Pre-bound output buffers (IOBinding) were measured on CPU and brought nothing (17.8 vs 17.6 ms at
640x480, within noise), so the CPU path keeps ``session.run`` and caller-owned outputs; on CUDA,
IOBinding keeps torch CUDA tensors on the device.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from geovis_ros.inference.devices import physical_cpu_cores
from geovis_ros.inference.engine import (
    BackendUnavailableError,
    EngineBase,
    InferenceError,
    ModelSpec,
    check_inputs,
    is_torch_tensor,
    require,
    to_numpy,
)

LOG = logging.getLogger(__name__)


def session_options(num_threads: int = 0) -> Any:
    """``onnxruntime.SessionOptions`` for low-latency single-stream inference.

    ``num_threads`` 0 means physical cores available to this process.
    """
    ort = require("onnxruntime", "the ONNX Runtime backend")
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or physical_cpu_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return options


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def gpu_providers() -> list[str]:
    """ONNX Runtime's GPU execution providers installed here, best first (of :data:`GPU_PROVIDERS`)."""
    available = set(require("onnxruntime", "the ONNX Runtime backend").get_available_providers())
    return [p for p in GPU_PROVIDERS if p in available]


class OnnxRuntimeEngine(EngineBase):
    """An ONNX model in an ``onnxruntime.InferenceSession`` (created once, reused every frame)."""

    backend = "onnxruntime"

    def __init__(self, spec: ModelSpec, onnx_bytes: bytes, height: int, width: int, *,
                 device: str = "cpu", num_threads: int = 0) -> None:
        ort = require("onnxruntime", "the ONNX Runtime backend")
        if device == "cpu":
            providers: list[Any] = ["CPUExecutionProvider"]
            self._device_index = 0
        else:
            gpu = gpu_providers()
            if not gpu:
                raise BackendUnavailableError("onnxruntime has no TensorRT or CUDA execution provider here "
                                              "(install onnxruntime-gpu for ONNX Runtime on CUDA)")
            self._device_index = int(device.partition(":")[2] or 0)
            providers = [(p, {"device_id": self._device_index}) for p in gpu] + ["CPUExecutionProvider"]
        # Always fp32: the ONNX graph's own precision.
        super().__init__(spec, height, width, "cpu" if device == "cpu" else f"cuda:{self._device_index}", "fp32")
        options = session_options(num_threads)
        try:
            self._session = ort.InferenceSession(onnx_bytes, options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for bad models
            raise InferenceError(f"onnxruntime could not load model {spec.name!r}: {err}") from err
        self._check_io_names([i.name for i in self._session.get_inputs()],
                             [o.name for o in self._session.get_outputs()], "ONNX model")
        self._output_names = [t.name for t in spec.outputs]
        LOG.debug("%s: onnxruntime %s on %s, %d intra-op threads", spec.name, ort.__version__, self.device,
                  options.intra_op_num_threads)

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the session; numpy in -> numpy out, torch in -> torch out (on ``device``)."""
        bound = check_inputs(inputs, self._spec.inputs)
        torch_inputs = [v for v in inputs.values() if is_torch_tensor(v)]
        if self.device != "cpu" and torch_inputs and all(v.is_cuda for v in torch_inputs):
            return self._infer_bound_cuda(inputs, bound)
        feed = {name: np.ascontiguousarray(to_numpy(value)) for name, value in inputs.items()}
        outputs = dict(zip(self._output_names, self._session.run(self._output_names, feed), strict=True))
        if not torch_inputs:
            return outputs
        import torch

        return {name: torch.from_numpy(out).to(self.device) for name, out in outputs.items()}

    def _infer_bound_cuda(self, inputs: Mapping[str, Any], bound: Mapping[str, int]) -> dict[str, Any]:
        """CUDA EP with IOBinding: inputs and outputs stay in torch CUDA memory."""
        import torch

        from geovis_ros.inference.gpu import shared_stream
        from geovis_ros.inference.torch_backend import torch_dtype

        binding = self._session.io_binding()
        keep_alive = []
        for spec in self._spec.inputs:
            tensor = inputs[spec.name].to(self.device).contiguous()
            keep_alive.append(tensor)
            binding.bind_input(spec.name, "cuda", self._device_index, np.dtype(spec.dtype), tuple(tensor.shape),
                               tensor.data_ptr())
        outputs: dict[str, Any] = {}
        for spec in self._spec.outputs:
            shape = spec.shape_with(bound)
            if shape is None:  # size not derivable from the inputs: let onnxruntime allocate it
                binding.bind_output(spec.name, "cpu")
                continue
            outputs[spec.name] = torch.empty(shape, dtype=torch_dtype(spec.dtype), device=self.device)
            binding.bind_output(spec.name, "cuda", self._device_index, np.dtype(spec.dtype), shape,
                                outputs[spec.name].data_ptr())
        # inputs written on the caller's stream or on the shared stream the GPU stages use are ready
        torch.cuda.current_stream(self.device).synchronize()
        shared_stream(self.device).synchronize()
        self._session.run_with_iobinding(binding)
        if len(outputs) < len(self._output_names):
            host = dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))
            for name in self._output_names:
                outputs.setdefault(name, torch.from_numpy(host[name]).to(self.device))
        return {name: outputs[name] for name in self._output_names}
