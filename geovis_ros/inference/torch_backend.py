"""PyTorch backend: the ``nn.Module`` itself on CPU or CUDA (fp16 autocast, optional torch.compile)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from geovis_ros.inference.engine import (
    EngineBase,
    InferenceError,
    ModelSpec,
    check_inputs,
    is_torch_tensor,
)
from geovis_ros.inference.gpu import DeviceStream

LOG = logging.getLogger(__name__)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a numpy dtype name (``float32`` -> ``torch.float32``)."""
    dtype = getattr(torch, np.dtype(name).name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"numpy dtype {name!r} has no torch equivalent")
    return dtype


class OrderedOutputs(torch.nn.Module):
    """Wraps a model so ``forward`` always returns a tuple in ``output_names`` order.

    The wrapped model may return one tensor, a tuple/list in that order, or a dict keyed by name.
    """

    def __init__(self, module: torch.nn.Module, output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.module = module
        self.output_names = output_names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the model; returns its outputs as a tuple ordered like ``output_names``."""
        result = self.module(*inputs)
        if isinstance(result, Mapping):
            missing = [n for n in self.output_names if n not in result]
            if missing:
                raise InferenceError(f"model returned outputs {sorted(result)}, missing {missing}")
            return tuple(result[n] for n in self.output_names)
        outputs = (result,) if isinstance(result, torch.Tensor) else tuple(result)
        if len(outputs) != len(self.output_names):
            raise InferenceError(f"model returned {len(outputs)} outputs, expected {len(self.output_names)} "
                                 f"named {list(self.output_names)}")
        return outputs


class TorchEngine(EngineBase):
    """Runs a model's ``nn.Module`` directly (the fallback that works wherever torch does).

    Inputs are moved to ``device`` once per call (a no-op for tensors already there); outputs are
    cast to the spec dtype (fp32 outputs stay fp32 under fp16 autocast). On CUDA the work runs on
    the device's shared stream (:class:`~geovis_ros.inference.gpu.DeviceStream`): numpy inputs go
    up through pinned buffers, numpy outputs come down through pinned buffers with one wait.
    """

    backend = "torch"

    def __init__(self, spec: ModelSpec, module: torch.nn.Module, height: int, width: int, *,
                 device: str = "cpu", precision: str = "fp32", compile_module: bool = False) -> None:
        self._device = torch.device(device)
        if self._device.type == "cuda" and self._device.index is None:
            self._device = torch.device("cuda", torch.cuda.current_device())
        if precision != "fp32" and not (self._device.type == "cuda" and precision == "fp16"):
            LOG.info("%s: torch on %s runs fp32 (%s requested)", spec.name, self._device, precision)
            precision = "fp32"
        super().__init__(spec, height, width, self._device, precision)
        wrapped = OrderedOutputs(module, tuple(t.name for t in spec.outputs)).eval().to(self._device)
        if compile_module:
            mode = "reduce-overhead" if self._device.type == "cuda" else "default"
            self._forward: Any = torch.compile(wrapped, mode=mode, dynamic=False)
        else:
            self._forward = wrapped
        self._output_dtypes = {t.name: torch_dtype(t.dtype) for t in spec.outputs}
        self._stream = DeviceStream(self._device) if self._device.type == "cuda" else None

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._precision == "fp16":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the module; numpy in -> numpy out, torch in -> torch on ``device`` out."""
        check_inputs(inputs, self._spec.inputs)
        torch_mode = any(is_torch_tensor(v) for v in inputs.values())
        if self._stream is None:  # CPU: torch.from_numpy shares the memory, nothing to stage
            outputs = self._run([inputs[t.name] if is_torch_tensor(inputs[t.name])
                                 else torch.from_numpy(inputs[t.name]) for t in self._spec.inputs])
            return outputs if torch_mode else {name: out.numpy() for name, out in outputs.items()}
        with self._stream.running():
            uploaded = self._stream.upload({t.name: inputs[t.name] for t in self._spec.inputs})
            outputs = self._run(list(uploaded.values()))
            return self._stream.hand_back(outputs) if torch_mode else self._stream.download(outputs)

    def _run(self, tensors: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The module on ``tensors`` (input order, moved to ``device``): outputs by name, in the spec dtypes."""
        with torch.inference_mode(), self._autocast():
            outputs = self._forward(*(t.to(self._device, non_blocking=True) for t in tensors))
        return {name: out.to(self._output_dtypes[name])
                for name, out in zip(self._output_dtypes, outputs, strict=True)}
