"""Health checks behind /diagnostics, ROS-free: levels, windowed counters, the worst of several checks.

Levels are those of ``diagnostic_msgs/DiagnosticStatus`` (OK 0, WARN 1, ERROR 2, STALE 3) and follow
diagnostic_updater's conventions: a frequency check against an expected minimum rate, a timestamp
check against an acceptable delay, WARN for a degraded but working node, ERROR for one whose
outputs cannot be trusted or do not come, STALE for a node that has no input to work on.
Counters are judged over a time window, so a startup hiccup clears once it is older.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

OK, WARN, ERROR, STALE = 0, 1, 2, 3
# Counters are judged over this many seconds.
HEALTH_WINDOW_S = 10.0


@dataclass(frozen=True)
class Check:
    """One finding: a diagnostic level and what a person should read."""

    level: int
    message: str


def worst(checks: list[Check]) -> Check:
    """The worst level of ``checks`` with their messages joined ("; "); OK "ok" when there are none.

    STALE ranks above ERROR only when nothing is worse: a node without input cannot fail.
    """
    problems = [c for c in checks if c.level != OK]
    if not problems:
        messages = [c.message for c in checks]
        return Check(OK, "; ".join(messages) if messages else "ok")
    level = max(c.level for c in problems)
    return Check(level, "; ".join(c.message for c in problems if c.level == level))


class WindowedCounters:
    """How much each named counter grew in the last ``window_s`` seconds (thread-safe)."""

    def __init__(self, window_s: float = HEALTH_WINDOW_S, start: float | None = None) -> None:
        self._window_s = window_s
        # Every counter is 0 at ``start`` (monotonic seconds, default now).
        self._samples: deque[tuple[float, dict[str, int]]] = deque(
            [(time.monotonic() if start is None else start, {})])
        self._lock = threading.Lock()

    def update(self, counters: dict[str, int], now: float | None = None) -> dict[str, int]:
        """Record the counters' current values; return each one's growth over the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._samples.append((now, dict(counters)))
            while len(self._samples) > 1 and self._samples[1][0] <= now - self._window_s:
                self._samples.popleft()
            oldest = self._samples[0][1]
        return {name: value - oldest.get(name, 0) for name, value in counters.items()}
