"""The conversion benchmark runs and reports every conversion (figures are not asserted)."""

import pytest

from geovis_ros.ros.bench import main, run_conversion_bench


def test_bench_rows_cover_the_required_conversions():
    rows = run_conversion_bench(repeats=1)
    names = [row["conversion"] for row in rows]
    for expected in (
        "Image rgb8 640x480 numpy->msg",
        "Image rgb8 640x480 msg->numpy",
        "Image 32FC1 640x480 numpy->msg",
        "PointCloud2 300000 xyz+rgb numpy->msg",
        "PointCloud2 300000 xyz+rgb msg->numpy",
    ):
        assert any(name.startswith(expected) for name in names), expected
    for row in rows:
        assert set(row) == {"conversion", "payload_mb", "median_ms", "min_ms", "mb_per_s"}
        assert row["median_ms"] > 0 and row["payload_mb"] > 0


def test_bench_main_prints_both_tables(capsys):
    assert main(["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "median ms" in out and "msg.data.frombytes(arr)" in out


def test_bench_refuses_zero_repeats():
    with pytest.raises(ValueError, match="repeats"):
        run_conversion_bench(repeats=0)
