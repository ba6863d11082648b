"""``geovis soak-bench``: the whole pipeline round a synthetic lap until the map and keyframe bounds bite."""

import pytest

from geovis_ros.apps.soak_bench import SoakSettings, bounds_reached, format_report, run_soak
from geovis_ros.cli import main
from geovis_ros.pipeline.pipeline import Pipeline

# The bounds bite after about 30 frames (four keyframes, 500 voxels).
TINY = SoakSettings(frames=40, lap_frames=60, width=128, height=96, map_max_points=500, max_keyframes=4,
                    sample_every=10, backend="torch")


def test_small_bounds_reach_the_pipeline_config() -> None:
    config = TINY.pipeline_config()
    assert config.mapping_config.map.map.max_points == 500 and config.mapping_config.map.max_keyframes == 4
    loop = config.mapping_config.loop
    assert loop is not None and (loop.max_database_size, loop.recent_keyframes_excluded) == (4, 3)
    assert not bounds_reached(Pipeline(config))


def test_soak_reaches_the_bounds_and_reports_rss_after_them() -> None:
    lines: list[str] = []
    report = run_soak(TINY, lines.append)
    assert report.bound_reached_at_frame is not None and report.bound_reached_at_frame < TINY.frames
    assert report.keyframes_stored == TINY.max_keyframes <= report.keyframes_created
    assert 0 < report.map_points <= TINY.map_max_points
    assert report.rss_at_bound_mb is not None and report.rss_after_bound_max_mb is not None
    assert report.rss_after_bound_max_mb >= report.rss_at_bound_mb > 0 and report.growth_after_bound is not None
    assert len(lines) == TINY.frames // TINY.sample_every + 1 and "bounds reached" in lines[-1]
    text = format_report(report, TINY)
    assert f"bounds reached at frame {report.bound_reached_at_frame}" in text and "growth after the bounds" in text


def test_bad_settings_exit_2_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["soak-bench", "--frames", "0", "--max-keyframes", "1"]) == 2
    assert "frames must be >= 1; max_keyframes must be >= 2" in capsys.readouterr().err
