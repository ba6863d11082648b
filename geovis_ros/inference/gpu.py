"""The GPU path's plumbing: one CUDA stream per device shared by every engine, and pinned host staging.

Every engine on a CUDA device (torch, TensorRT) enqueues its work on the process's one stream for
that device (:func:`shared_stream`), so the network stages (depth, flow, pose) run in order on one
stream and the host waits once per stage, when the stage's results go to the host
(:meth:`DeviceStream.download`). Host <-> device copies go through page-locked (pinned) host
buffers allocated once per tensor name, shape and dtype and reused (:meth:`DeviceStream.pinned`):
a copy from ordinary (pageable) memory is staged by the driver and cannot overlap with the host.

Nothing here touches CUDA at import time; torch is imported when a function needs it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from geovis_ros.inference.engine import is_torch_tensor

if TYPE_CHECKING:
    import torch

Allocator = Callable[[tuple[int, ...], "torch.dtype"], "torch.Tensor"]
"""``(shape, dtype) -> host tensor``: where :class:`DeviceStream` gets its staging buffers."""


class SharedStreams:
    """One stream per CUDA device index, made by ``factory(index)`` on first use; thread-safe."""

    def __init__(self, factory: Callable[[int], Any]) -> None:
        self._factory = factory
        self._streams: dict[int, Any] = {}
        self._lock = threading.Lock()

    def get(self, index: int) -> Any:
        """The stream of device ``index`` (the same object on every call, from any thread)."""
        with self._lock:
            if index not in self._streams:
                self._streams[index] = self._factory(index)
            return self._streams[index]


def _new_stream(index: int) -> torch.cuda.Stream:
    import torch

    return torch.cuda.Stream(device=index)


_STREAMS = SharedStreams(_new_stream)


def shared_stream(device: str | torch.device) -> torch.cuda.Stream:
    """The process's one CUDA stream for ``device`` (``cuda``: the current device, ``cuda:N``); ValueError for a CPU."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"a shared CUDA stream needs a CUDA device, got {device}")
    return _STREAMS.get(torch.cuda.current_device() if device.index is None else device.index)


def pinned_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised page-locked host tensor of ``shape`` and ``dtype`` (needs CUDA)."""
    import torch

    return torch.empty(shape, dtype=dtype, pin_memory=True)


class DeviceStream:
    """An engine's (or a stage's) door to the GPU: the device's shared stream and pinned staging buffers.

    ``device``: the CUDA device the tensors live on; ``stream``: default :func:`shared_stream`
    (``device``); ``allocator``: where staging buffers come from (default :func:`pinned_empty`).
    One per engine, used by one thread at a time; the stream itself is shared.

    A staging buffer is rewritten by the next :meth:`pinned` call of the same name, so a copy out of
    it must have finished by then: :meth:`pinned` first waits for the stream if that name was staged
    since the last :meth:`synchronize`, which the numpy path never needs (it ends with
    :meth:`download`, which synchronises).
    """

    def __init__(self, device: str | torch.device, stream: Any = None, allocator: Allocator = pinned_empty) -> None:
        import torch

        self.device = torch.device(device)
        self.stream = shared_stream(self.device) if stream is None else stream
        self._allocator = allocator
        self._buffers: dict[str, torch.Tensor] = {}
        self._pending: set[str] = set()  # staging buffers written since the last wait
        self._caller: Any = None

    @property
    def handle(self) -> int:
        """The raw ``cudaStream_t`` of the shared stream (what TensorRT's ``execute_async_v3`` takes)."""
        return int(self.stream.cuda_stream)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Make the shared stream and ``device`` current for torch's work inside the block.

        The shared stream first waits for what the caller queued on its own stream (e.g. an input
        it computed), and the caller's stream waits for the shared one on exit, so tensors handed
        across (see :meth:`hand_back`) are safe on either stream.
        """
        import torch

        caller = torch.cuda.current_stream(self.device)
        if caller != self.stream:
            self.stream.wait_stream(caller)
        self._caller = caller
        try:
            with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
                yield
        finally:
            self._caller = None
            if caller != self.stream:
                caller.wait_stream(self.stream)

    def hand_back(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``tensors`` made on the shared stream, marked as used by the caller's stream (inside :meth:`running`).

        Without the mark torch's caching allocator could give their memory to new work on the
        shared stream while the caller's stream still reads them.
        """
        caller = self._caller
        if caller is not None and caller != self.stream:
            for tensor in tensors.values():
                tensor.record_stream(caller)
        return dict(tensors)

    def pinned(self, name: str, array: NDArray[Any]) -> torch.Tensor:
        """A pinned host tensor holding ``array`` (any shape, dtype); reused for ``name`` while shape and dtype stay."""
        import torch

        if name in self._pending:
            self.synchronize()
        dtype = torch.from_numpy(np.empty(0, array.dtype)).dtype
        buffer = self._buffer(f"in:{name}", tuple(array.shape), dtype)
        np.copyto(buffer.numpy(), array, casting="no")
        self._pending.add(name)
        return buffer

    def upload(self, inputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Inputs (numpy arrays, torch tensors) -> tensors on ``device``, copied asynchronously on the current stream.

        numpy goes through :meth:`pinned` into a new tensor the caller owns (kept across calls, e.g.
        as the next frame's input, it is never overwritten); a tensor already on ``device`` is passed
        through. Call inside :meth:`running`.
        """
        return {name: value.to(self.device, non_blocking=True) if is_torch_tensor(value)
                else self.pinned(name, value).to(self.device, non_blocking=True, copy=True)
                for name, value in inputs.items()}

    def download(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, NDArray[Any]]:
        """Device tensors -> host numpy arrays: asynchronous copies into pinned buffers, one :meth:`synchronize`.

        The arrays are copies the caller owns (the pinned buffers are reused). Call inside
        :meth:`running` (the copies queue on the current stream).
        """
        staged = {}
        for name, tensor in tensors.items():
            buffer = self._buffer(f"out:{name}", tuple(tensor.shape), tensor.dtype)
            buffer.copy_(tensor, non_blocking=True)
            staged[name] = buffer
        self.synchronize()
        return {name: buffer.numpy().copy() for name, buffer in staged.items()}

    def synchronize(self) -> None:
        """Wait until the work queued on the shared stream so far is done (not work other threads queue later)."""
        self.stream.record_event().synchronize()
        self._pending.clear()

    def _buffer(self, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """The staging buffer ``key`` at ``shape`` and ``dtype``: kept while they stay, replaced when they change."""
        buffer = self._buffers.get(key)
        if buffer is None or tuple(buffer.shape) != shape or buffer.dtype != dtype:
            buffer = self._buffers[key] = self._allocator(shape, dtype)
        return buffer
