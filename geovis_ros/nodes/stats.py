"""Rolling rate and latency statistics for diagnostics (ROS-free, thread-safe)."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class RollingStats:
    """Event rate (Hz) and latency percentiles (ms) over the last ``window`` events."""

    def __init__(self, window: int = 200) -> None:
        self._times: deque[float] = deque(maxlen=window)
        self._latencies_ms: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, latency_ms: float | None = None, now: float | None = None) -> None:
        """Record one event at ``now`` (monotonic seconds) with an optional latency in ms."""
        with self._lock:
            self._times.append(time.monotonic() if now is None else now)
            if latency_ms is not None:
                self._latencies_ms.append(float(latency_ms))
            self.count += 1

    def rate_hz(self, now: float | None = None) -> float:
        """Events per second over the window; 0 with fewer than two events or when stale."""
        with self._lock:
            if len(self._times) < 2:
                return 0.0
            now = time.monotonic() if now is None else now
            span = now - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def latency_percentiles_ms(self, percentiles: tuple[float, ...] = (50.0, 99.0)) -> tuple[float, ...]:
        """Latency percentiles in ms over the window (NaN when nothing was recorded)."""
        with self._lock:
            if not self._latencies_ms:
                return tuple(float("nan") for _ in percentiles)
            values = np.percentile(np.fromiter(self._latencies_ms, float), percentiles)
        return tuple(float(v) for v in values)
