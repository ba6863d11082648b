"""ONNX export, onnx.checker and ONNX Runtime vs PyTorch parity.

Export gives named inputs/outputs with a fixed or dynamic spatial size.

Opset 17: recent enough for grid_sample (>= 16) and LayerNormalization, and well supported by
TensorRT 10's ONNX parser. The TorchScript exporter is used (``dynamo=False``): the torch.export
based one needs the extra ``onnxscript`` package. Export is deterministic (same module, same bytes),
so the TensorRT cache key, which hashes these bytes, is stable across starts.
"""

from __future__ import annotations

import logging
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geovis_ros.inference.engine import (
    SPATIAL_SYMBOLS,
    InferenceError,
    ModelSpec,
    TensorSpec,
    output_errors,
    require,
)
from geovis_ros.inference.torch_backend import OrderedOutputs

LOG = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4


class ExportError(InferenceError):
    """A model could not be exported, or its ONNX graph is invalid or misnamed."""


def export_onnx(spec: ModelSpec, module: torch.nn.Module, height: int, width: int, *, dynamic: bool = True,
                opset: int = OPSET) -> bytes:
    """ONNX bytes of ``module`` traced at ``height`` x ``width``, checked with :func:`check_onnx`.

    ``dynamic``: the spec's symbolic dims (``height``, ``width``, ...) stay symbolic in the graph;
    otherwise the graph is fixed to this size. The module is traced on its own device, in eval mode.
    """
    names_out = tuple(t.name for t in spec.outputs)
    wrapped = OrderedOutputs(module, names_out).eval()
    device = next(module.parameters(), torch.empty(0)).device
    golden = spec.make_inputs(height, width)
    example = tuple(torch.from_numpy(golden[t.name]).to(device) for t in spec.inputs)
    with (tempfile.TemporaryDirectory(prefix="geovis-export-") as tmp,
          warnings.catch_warnings(record=True) as caught, torch.inference_mode(False), torch.no_grad()):
        warnings.simplefilter("always")
        onnx_path = Path(tmp) / f"{spec.name}.onnx"
        try:
            torch.onnx.export(wrapped, example, onnx_path, dynamo=False, opset_version=opset,
                              input_names=[t.name for t in spec.inputs], output_names=list(names_out),
                              dynamic_axes=spec.dynamic_axes() if dynamic else None, do_constant_folding=True)
            onnx_bytes = onnx_path.read_bytes()
        except Exception as err:  # the exporter raises many unrelated types
            raise ExportError(f"ONNX export of {spec.name} failed: {err}") from err
    for warning in caught:  # tracer warnings flag size-dependent Python logic; the rest is exporter chatter
        level = logging.WARNING if issubclass(warning.category, torch.jit.TracerWarning) else logging.DEBUG
        LOG.log(level, "ONNX export of %s: %s", spec.name, warning.message)
    check_onnx(spec, onnx_bytes)
    return onnx_bytes


def check_onnx(spec: ModelSpec, onnx_bytes: bytes) -> Any:
    """Run ``onnx.checker`` (full check, with shape inference) and verify the tensor names.

    Returns the ``onnx.ModelProto``; raises ExportError naming the problem.
    """
    onnx = require("onnx", "checking an ONNX model")
    try:
        model = onnx.load_from_string(onnx_bytes)
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:  # DecodeError, ValidationError, InferenceError
        raise ExportError(f"ONNX model of {spec.name} is invalid: {err}") from err
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    outputs = [o.name for o in model.graph.output]
    if inputs != [t.name for t in spec.inputs] or not {t.name for t in spec.outputs} <= set(outputs):
        raise ExportError(f"ONNX model of {spec.name} has inputs {inputs} and outputs {outputs}; expected "
                          f"{[t.name for t in spec.inputs]} -> {[t.name for t in spec.outputs]}")
    return model


def onnx_bytes_for(spec: ModelSpec, height: int, width: int) -> bytes:
    """The spec's shipped ONNX file if it has one, else its module exported with dynamic spatial size."""
    if spec.onnx_path is not None:
        try:
            onnx_bytes = Path(spec.onnx_path).read_bytes()
        except OSError as err:
            raise ExportError(f"cannot read the ONNX file of {spec.name}: {err}") from err
        check_onnx(spec, onnx_bytes)
        return onnx_bytes
    assert spec.build_module is not None  # ModelSpec guarantees one of the two
    return export_onnx(spec, spec.build_module(), height, width, dynamic=True)


@dataclass(frozen=True)
class ParityReport:
    """ONNX Runtime vs PyTorch on the same inputs: relative error per output."""

    model: str
    height: int
    width: int
    errors: dict[str, float]
    tolerance: float

    @property
    def passed(self) -> bool:
        """Every output within tolerance."""
        return all(err <= self.tolerance for err in self.errors.values())

    def raise_if_failed(self) -> None:
        """ExportError listing the outputs beyond tolerance."""
        if not self.passed:
            raise ExportError(f"ONNX Runtime disagrees with PyTorch for {self.model} at {self.width}x{self.height}: "
                              f"relative errors {self.errors} (tolerance {self.tolerance:g})")


def parity_check(spec: ModelSpec, module: torch.nn.Module, onnx_bytes: bytes, height: int, width: int, *,
                 tolerance: float = PARITY_TOLERANCE, seed: int | None = None) -> ParityReport:
    """Run fresh random inputs (``seed`` None: new entropy) through the module (CPU, fp32) and ONNX Runtime."""
    from geovis_ros.inference.onnxruntime_backend import OnnxRuntimeEngine
    from geovis_ros.inference.torch_backend import TorchEngine

    seed = int(np.random.default_rng().integers(1 << 62)) if seed is None else seed
    inputs = spec.make_inputs(height, width, seed=seed)
    expected = TorchEngine(spec, module, height, width).infer(inputs)
    actual = OnnxRuntimeEngine(spec, onnx_bytes, height, width).infer(inputs)
    return ParityReport(spec.name, height, width, output_errors(actual, expected), tolerance)


def spec_from_onnx(path: Path, name: str | None = None) -> ModelSpec:
    """A ModelSpec for a user's ONNX file: names, shapes and dtypes read from the graph.

    The last two dims of a rank-4 tensor are taken as ``height`` and ``width`` when symbolic; other
    symbolic or unknown dims keep their name (they resolve to 1, e.g. batch).
    """
    onnx = require("onnx", "reading an ONNX model")
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # DecodeError, OSError
        raise ExportError(f"cannot read ONNX file {path}: {err}") from err
    initializers = {i.name for i in model.graph.initializer}

    def tensor_spec(value_info: Any) -> TensorSpec:
        tensor_type = value_info.type.tensor_type
        dims = tensor_type.shape.dim
        shape: list[int | str] = []
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(int(dim.dim_value))
            elif len(dims) == 4 and axis >= 2:
                shape.append(SPATIAL_SYMBOLS[axis - 2])
            else:
                shape.append(dim.dim_param or f"dim{axis}")
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        return TensorSpec(value_info.name, tuple(shape), dtype)

    model_name = name or re.sub(r"[^A-Za-z0-9_-]", "_", path.stem)
    return ModelSpec(
        name=model_name,
        inputs=tuple(tensor_spec(i) for i in model.graph.input if i.name not in initializers),
        outputs=tuple(tensor_spec(o) for o in model.graph.output),
        onnx_path=path,
    )
