"""``geovis dataset synth|preview|bench``: files written, read back, and clean errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from geovis_ros.cli import main
from geovis_ros.data.tum import TumSequence
from geovis_ros.synthetic.scenes import SynthConfig, render_sequence

SMALL = ["--frames", "3", "--size", "32x24"]


def test_synth_writes_a_tum_folder_that_reads_back_as_rendered(tmp_path: Path):
    out = tmp_path / "seq"
    assert main(["dataset", "synth", "--out", str(out), "--scene", "tabletop", "--seed", "4", *SMALL]) == 0
    for name in ("rgb.txt", "depth.txt", "groundtruth.txt", "calibration.yaml"):
        assert (out / name).is_file()
    assert len(list((out / "rgb").glob("*.png"))) == 3
    assert sorted(p.name for p in (out / "flow").glob("*.flo")) == ["000000.flo", "000001.flo"]
    rendered = list(render_sequence(SynthConfig(scene="tabletop", seed=4, frames=3, width=32, height=24)))
    read = list(TumSequence(out))
    assert len(read) == 3
    for expected, got in zip(rendered, read, strict=True):
        np.testing.assert_array_equal(got.rgb, expected.rgb)
        np.testing.assert_allclose(got.depth, expected.depth, atol=0.0006)  # millimetre PNG
        np.testing.assert_allclose(got.pose, expected.pose, atol=1e-6)
    np.testing.assert_allclose(read[0].flow, rendered[0].flow, atol=1e-6)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_synth_with_bag_writes_both(tmp_path: Path, storage: str):
    from geovis_ros.data.bag import BagSequence

    out = tmp_path / "seq"
    assert main(["dataset", "synth", "--out", str(out), "--bag", "--bag-format", storage, *SMALL]) == 0
    from_bag, from_folder = list(BagSequence(out / "bag")), list(TumSequence(out))
    assert len(from_bag) == len(from_folder) == 3
    for bagged, filed in zip(from_bag, from_folder, strict=True):
        assert bagged.stamp_ns == filed.stamp_ns
        np.testing.assert_array_equal(bagged.rgb, filed.rgb)
        np.testing.assert_allclose(bagged.pose, filed.pose, atol=1e-6)


def test_synth_refuses_a_non_empty_folder_unless_forced(tmp_path: Path, capsys):
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["dataset", "synth", "--out", str(tmp_path), *SMALL]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["dataset", "synth", "--out", str(tmp_path), "--force", "--no-flow", *SMALL]) == 0
    assert (tmp_path / "keep.txt").read_text() == "precious"
    assert not list((tmp_path / "flow").glob("*.flo"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--frames", "0"], "frames must be >= 1"),
        (["--hfov", "200"], "hfov_deg"),
        (["--texture-dir", "/nonexistent/folder"], "texture_dir"),
    ],
)
def test_synth_bad_options_fail_cleanly_before_writing(tmp_path: Path, capsys, arguments, message):
    out = tmp_path / "seq"
    assert main(["dataset", "synth", "--out", str(out), "--size", "32x24", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_malformed_size_is_an_argument_error(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["dataset", "synth", "--out", str(tmp_path / "x"), "--size", "320by240"])
    assert exit_info.value.code == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


def test_texture_folder_option(tmp_path: Path):
    textures = tmp_path / "textures"
    textures.mkdir()
    cv2.imwrite(str(textures / "wall.png"), np.random.default_rng(0).integers(0, 255, (20, 20, 3), np.uint8))
    assert main(["dataset", "synth", "--out", str(tmp_path / "seq"), "--texture-dir", str(textures), *SMALL]) == 0


def test_preview_writes_a_contact_sheet(tmp_path: Path):
    png = tmp_path / "preview.png"
    assert main(["dataset", "preview", "--out", str(png), "--rows", "2", "--moving-objects", "1", *SMALL]) == 0
    sheet = cv2.imread(str(png))
    assert sheet.shape == (2 * 24, 4 * 32, 3)


def test_preview_needs_a_png_name(tmp_path: Path, capsys):
    assert main(["dataset", "preview", "--out", str(tmp_path / "sheet.jpg"), *SMALL]) == 2
    assert ".png" in capsys.readouterr().err


def test_bench_prints_frames_per_second(capsys):
    assert main(["dataset", "bench", "--frames", "2", "--size", "32x24", "--scene", "street"]) == 0
    assert "frames/s" in capsys.readouterr().out


def test_a_failing_bag_writer_stops_the_run_with_its_error(tmp_path: Path, monkeypatch, capsys):
    import geovis_ros.data.bag as bag
    from geovis_ros.data.image_io import DatasetError

    consumed = []

    def broken_writer(path, frames, storage="sqlite3", with_depth=False):
        for frame in frames:
            consumed.append(frame.name)
            raise DatasetError(f"{path}: disk full")

    monkeypatch.setattr(bag, "write_bag", broken_writer)
    out = tmp_path / "seq"
    assert main(["dataset", "synth", "--out", str(out), "--bag", "--frames", "20", "--size", "32x24"]) == 2
    assert "disk full" in capsys.readouterr().err
    assert consumed == ["000000"]
    assert len(list((out / "rgb").glob("*.png"))) < 20  # rendering stopped early


def test_bag_can_carry_depth(tmp_path: Path):
    from geovis_ros.data.bag import BagSequence

    out = tmp_path / "seq"
    assert main(["dataset", "synth", "--out", str(out), "--bag", "--bag-depth", *SMALL]) == 0
    frames = list(BagSequence(out / "bag"))
    assert frames[0].depth is not None and np.isfinite(frames[0].depth).all()
