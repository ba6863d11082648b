import threading

import pytest

from geovis_ros.nodes.frame_queue import FrameQueue
from geovis_ros.nodes.stats import RollingStats


def test_live_mode_keeps_only_newest_and_counts_drops():
    q = FrameQueue[int]("live")
    for i in range(5):
        q.put(i)
    assert q.get(timeout=0) == 4 and q.dropped == 4 and q.get(timeout=0) is None


def test_bag_mode_keeps_order():
    q = FrameQueue[int]("bag")
    for i in range(100):
        q.put(i)
    assert [q.get(timeout=0) for _ in range(100)] == list(range(100)) and q.dropped == 0


def test_close_wakes_waiting_worker():
    q = FrameQueue[int]("live")
    result = []
    worker = threading.Thread(target=lambda: result.append(q.get(timeout=5)))
    worker.start()
    q.close()
    worker.join(timeout=2)
    assert not worker.is_alive() and result == [None]


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        FrameQueue("fast")


def test_rolling_stats_rate_and_percentiles():
    stats = RollingStats(window=100)
    assert stats.rate_hz() == 0.0
    for i in range(11):
        stats.add(latency_ms=float(i), now=i * 0.1)
    assert stats.rate_hz(now=1.0) == pytest.approx(10.0)
    p50, p99 = stats.latency_percentiles_ms()
    assert p50 == pytest.approx(5.0) and p99 == pytest.approx(9.9)
