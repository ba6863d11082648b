"""Safe persistence of network weights and training state: nothing here unpickles arbitrary objects.

- Shipped and exported weights: safetensors (flat name -> tensor, plus str -> str metadata). The
  header's declared length is checked against a bound and the file size before anything else is
  read, and weights are loaded into a model only when every tensor has the name, shape and dtype
  the model expects and holds finite values (an int8, float16 or NaN-filled file is refused).
- Training checkpoints (model + optimiser + step + RNG states): ``torch.save`` of plain
  containers of tensors and numbers, loaded back ONLY with ``torch.load(weights_only=True)``,
  which refuses any pickled object that is not a tensor or a plain container. A file that would
  need arbitrary code to load raises :class:`CheckpointError` and nothing in it runs.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from geovis_ros.errors import GeovisError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MAX_SAFETENSORS_HEADER_BYTES = 8 << 20
"""Bound on a safetensors header (JSON: names, dtypes, shapes, offsets; about 100 bytes a tensor)."""
_SAFETENSORS_LENGTH = struct.Struct("<Q")


class CheckpointError(GeovisError, RuntimeError):
    """A weights or checkpoint file is missing, unsafe, corrupted or does not fit the model."""


def _atomic_target(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def save_weights(model: nn.Module, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s state dict (parameters and buffers) to a safetensors file, atomically."""
    path = Path(path)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    fd, tmp = _atomic_target(path)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={str(k): str(v) for k, v in (metadata or {}).items()})
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; weights are shipped and shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, read only after its declared length passed the checks.

    Raises :class:`CheckpointError` when the file is missing, shorter than its declared header,
    declares a header over :data:`MAX_SAFETENSORS_HEADER_BYTES`, or the header is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(_SAFETENSORS_LENGTH.size)
            if len(prefix) < _SAFETENSORS_LENGTH.size:
                raise CheckpointError(f"{path} is not a valid safetensors file: {size} bytes, too short")
            (length,) = _SAFETENSORS_LENGTH.unpack(prefix)
            if length > MAX_SAFETENSORS_HEADER_BYTES:
                raise CheckpointError(f"{path} is not a valid safetensors file: its header declares {length} bytes, "
                                      f"over the bound of {MAX_SAFETENSORS_HEADER_BYTES}; refused before reading it")
            if _SAFETENSORS_LENGTH.size + length > size:
                raise CheckpointError(f"{path} is not a valid safetensors file: its header declares {length} bytes, "
                                      f"the file has {size} (truncated?)")
            header = json.loads(handle.read(length))
    except OSError as err:
        raise CheckpointError(f"{path} could not be read: {err}") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file: unreadable header ({err})") from err
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a valid safetensors file: its header is a {type(header).__name__}")
    return header


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict on CPU, metadata) from a safetensors file; raises :class:`CheckpointError`.

    The header is checked first (:func:`read_safetensors_header`), so an oversized or lying one
    is refused before the tensors are read.
    """
    path = Path(path)
    read_safetensors_header(path)
    try:
        tensors = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file: {err}") from err
    return tensors, dict(metadata)


def check_weights_fit(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` unless ``tensors`` match ``model``'s state dict exactly.

    Exactly: the same names, and per tensor the same shape and dtype (no silent conversion of
    int8 or float16 weights), with only finite values in floating-point tensors. The message names
    ``source`` and every offending tensor (up to five).
    """
    expected = model.state_dict()
    problems = [f"missing {name!r}" for name in expected if name not in tensors]
    problems += [f"unexpected {name!r}" for name in tensors if name not in expected]
    for name, tensor in tensors.items():
        want = expected.get(name)
        if want is None:
            continue
        if tuple(tensor.shape) != tuple(want.shape):
            problems.append(f"{name!r} has shape {tuple(tensor.shape)}, the model expects {tuple(want.shape)}")
        elif tensor.dtype != want.dtype:
            problems.append(f"{name!r} is {tensor.dtype}, the model expects {want.dtype}")
        elif tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            problems.append(f"{name!r} holds {bad} non-finite value(s) of {tensor.numel()}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: {'; '.join(problems[:5])}{more}")


def load_weights_into(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load a safetensors file into ``model`` (:func:`check_weights_fit` first); returns metadata."""
    tensors, metadata = load_weights(path)
    check_weights_fit(model, tensors, str(path))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit {type(model).__name__}: {err}") from err
    return metadata


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Atomically ``torch.save`` a training state made of tensors, numbers, strings, lists and dicts."""
    path = Path(path)
    fd, tmp = _atomic_target(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(state), handle)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Raises :class:`CheckpointError` for a missing, corrupted or unsafe file (one that holds
    pickled objects other than tensors and plain containers); such a file's code never runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled objects other than tensors and plain containers "
            f"(possibly malicious); only weights-only checkpoints are accepted ({err})"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, expected a dict training state")
    return state
