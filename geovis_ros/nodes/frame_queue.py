"""Hand-off between a subscription callback and the inference worker (ROS-free).

``live`` mode keeps only the newest item (depth 1, drop oldest): a slow network never makes the
robot see the past. ``bag`` mode keeps every item in order (bounded, so a runaway publisher
cannot exhaust memory; overflow drops the oldest and is counted).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

BAG_QUEUE_LIMIT = 10_000


class FrameQueue(Generic[T]):
    """Thread-safe queue whose ``put`` never blocks; ``dropped`` counts discarded items."""

    def __init__(self, mode: str) -> None:
        if mode not in ("live", "bag"):
            raise ValueError(f"mode must be 'live' or 'bag', got '{mode}'")
        self._items: deque[T] = deque(maxlen=1 if mode == "live" else BAG_QUEUE_LIMIT)
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        """Add an item; when full, the oldest item is discarded and counted."""
        with self._cond:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> T | None:
        """Oldest item, waiting up to ``timeout`` seconds; None on timeout or after close()."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            if self._closed or not self._items:
                return None
            return self._items.popleft()

    def clear(self) -> None:
        """Drop everything queued (not counted as dropped: used on reset)."""
        with self._cond:
            self._items.clear()

    def close(self) -> None:
        """Wake every waiting ``get`` and make later ones return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
