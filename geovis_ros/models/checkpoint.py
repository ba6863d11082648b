"""Safe persistence of network weights and training state: nothing here unpickles arbitrary objects.

- Shipped and exported weights: safetensors (flat name -> tensor, plus str -> str metadata).
- Training checkpoints (model + optimiser + step + RNG states): ``torch.save`` of plain
  containers of tensors and numbers, loaded back ONLY with ``torch.load(weights_only=True)``,
  which refuses any pickled object that is not a tensor or a plain container. A file that would
  need arbitrary code to load raises :class:`CheckpointError` and nothing in it runs.
"""

from __future__ import annotations

import os
import pickle
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


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict on CPU, metadata) from a safetensors file; raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        tensors = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file: {err}") from err
    return tensors, dict(metadata)


def load_weights_into(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load a safetensors file into ``model`` (strict: names and shapes must match); returns metadata."""
    tensors, metadata = load_weights(path)
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
