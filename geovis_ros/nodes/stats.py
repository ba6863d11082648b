"""Windowed rate and latency statistics for diagnostics (ROS-free, thread-safe)."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

# Rates are measured over this many seconds, so a startup hiccup clears once it is older.
RATE_WINDOW_S = 10.0


class RollingStats:
    """Event rate (Hz, over the last ``window_s`` seconds) and latency percentiles (ms, last ``window`` events)."""

    def __init__(self, window: int = 200, window_s: float = RATE_WINDOW_S) -> None:
        self._times: deque[float] = deque(maxlen=window)
        self._latencies_ms: deque[float] = deque(maxlen=window)
        self._window_s = window_s
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
        """Events per second in the window ending ``now``: (events - 1) / (now - first event in it).

        0 with fewer than two events in the window; it decays while no event arrives.
        """
        with self._lock:
            now = time.monotonic() if now is None else now
            recent = [t for t in self._times if t >= now - self._window_s]
        if len(recent) < 2:
            return 0.0
        span = now - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def seconds_since_last(self, now: float | None = None) -> float:
        """Seconds since the newest event (infinite before the first)."""
        with self._lock:
            if not self._times:
                return float("inf")
            return (time.monotonic() if now is None else now) - self._times[-1]

    def latency_percentiles_ms(self, percentiles: tuple[float, ...] = (50.0, 99.0)) -> tuple[float, ...]:
        """Latency percentiles in ms over the window (NaN when nothing was recorded)."""
        with self._lock:
            if not self._latencies_ms:
                return tuple(float("nan") for _ in percentiles)
            values = np.percentile(np.fromiter(self._latencies_ms, float), percentiles)
        return tuple(float(v) for v in values)
