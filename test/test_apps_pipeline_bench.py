"""``geovis pipeline-bench``: per-stage milliseconds of real pipeline runs, with the DIS peers, in one run."""

import json

from geovis_ros.cli import main


def test_pipeline_bench_profiles_every_stage_and_the_peers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["pipeline-bench", "--sizes", "64x48", "--frames", "4", "--warmup", "1", "--backend", "torch",
                 "--variants", "default,features-odometry", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    rows = {row["variant"]: row for row in figures["pipeline"]}
    assert set(rows) == {"default", "features-odometry"}
    for row in rows.values():
        assert row["size"] == "64x48" and row["frames"] == 3 and row["backend"] == "torch-cpu"
        stages = row["stage_ms"]
        assert {"depth", "flow", "odometry", "points", "total"} <= set(stages)
        assert stages["total"] >= stages["depth"] + stages["flow"] > 0
        assert abs(row["fps"] - 1000.0 / stages["total"]) < 1e-6
    assert {p["name"] for p in figures["flow_peers"]} == {"dis-ultrafast", "dis-fast", "dis-medium",
                                                          "dis-medium-seeded"}
    printed = capsys.readouterr().out
    assert "features-odometry" in printed and "dis-medium-seeded" in printed


def test_pipeline_bench_refuses_an_unknown_variant(capsys):
    assert main(["pipeline-bench", "--variants", "fastest"]) == 2
    assert "unknown ['fastest']" in capsys.readouterr().err
