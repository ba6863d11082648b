"""Hand-off between a subscription callback and the inference worker (ROS-free).

``live`` mode keeps only the newest item (depth 1, drop oldest): a slow network never makes the
robot see the past. ``bag`` mode keeps every item in order, bounded in bytes (``max_bytes`` of
``size_of(item)``) and in count, so a player that outruns the pipeline cannot exhaust memory:
overflow drops the oldest items, counts them and reports it from ``put`` so the caller can log it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# Bag mode: at most this many items, whatever their size.
BAG_QUEUE_LIMIT = 10_000
# Bag mode default byte budget (about 580 VGA rgb8 frames, 90 at 1080p).
BAG_QUEUE_BYTES = 512 * 1024 * 1024


class FrameQueue(Generic[T]):
    """Thread-safe queue whose ``put`` never blocks; ``dropped`` counts discarded items."""

    def __init__(self, mode: str, max_bytes: int = BAG_QUEUE_BYTES,
                 size_of: Callable[[T], int] | None = None) -> None:
        if mode not in ("live", "bag"):
            raise ValueError(f"mode must be 'live' or 'bag', got '{mode}'")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self._items: deque[tuple[T, int]] = deque()
        self._max_items = 1 if mode == "live" else BAG_QUEUE_LIMIT
        self._max_bytes = max_bytes
        self._size_of = size_of or (lambda _: 0)
        self._bytes = 0
        self._cond = threading.Condition()
        self._closed = False
        self._woken = False
        self.dropped = 0

    def put(self, item: T) -> int:
        """Add an item; drop (and count) the oldest ones while over the count or byte bound.

        The new item is always kept. Returns how many items this call dropped.
        """
        size = self._size_of(item)
        dropped = 0
        with self._cond:
            while self._items and (len(self._items) >= self._max_items or self._bytes + size > self._max_bytes):
                _, old_size = self._items.popleft()
                self._bytes -= old_size
                dropped += 1
            self._items.append((item, size))
            self._bytes += size
            self.dropped += dropped
            self._cond.notify()
        return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """Oldest item, waiting up to ``timeout`` seconds; None on timeout, after :meth:`wake` or after close()."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed or self._woken, timeout)
            self._woken = False
            if self._closed or not self._items:
                return None
            item, size = self._items.popleft()
            self._bytes -= size
            return item

    def wake(self) -> None:
        """Make a waiting (or the next) ``get`` return at once (None when nothing is queued)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting ``get`` and make later ones return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def bytes(self) -> int:
        """Sum of ``size_of`` over the queued items."""
        with self._cond:
            return self._bytes

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
