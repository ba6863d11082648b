import cv2
import numpy as np

from geovis_ros.cli import main
from geovis_ros.data.image_io import read_depth_png, read_flo


def _write_pair(tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.random((45, 61, 3)) * 255).astype(np.uint8)
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(first), image)
    cv2.imwrite(str(second), np.roll(image, 2, axis=1))
    return first, second


def test_predict_depth_writes_metric_depth_at_input_size(tmp_path):
    image, _ = _write_pair(tmp_path)
    out, png = tmp_path / "d.npy", tmp_path / "d.png"
    assert main(["predict", "depth", str(image), "--out", str(out), "--png", str(png), "--K", "50,50,30,22"]) == 0
    depth = np.load(out)
    assert depth.shape == (45, 61) and depth.dtype == np.float32 and bool(np.all(depth > 0))
    np.testing.assert_allclose(read_depth_png(png), depth, atol=1e-3)
    # Doubling the focal length doubles the metric depth of the same image.
    assert main(["predict", "depth", str(image), "--out", str(tmp_path / "d2.npy"), "--K", "100,100,30,22"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "d2.npy"), 2 * depth, rtol=1e-4)


def test_predict_flow_writes_flo_at_input_size(tmp_path):
    first, second = _write_pair(tmp_path)
    out = tmp_path / "f.flo"
    assert main(["predict", "flow", str(first), str(second), "--out", str(out)]) == 0
    flow = read_flo(out)
    assert flow.shape == (45, 61, 2)
    assert abs(float(np.median(flow[..., 0])) - 2.0) < 0.5


def test_predict_bad_inputs_are_clean_errors(tmp_path, capsys):
    first, _ = _write_pair(tmp_path)
    assert main(["predict", "depth", str(tmp_path / "missing.png"), "--out", str(tmp_path / "d.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["predict", "depth", str(first), "--out", str(tmp_path / "d.npy"), "--K", "1,2,3"]) == 2
    assert "fx,fy,cx,cy" in capsys.readouterr().err
    assert main(["predict", "depth", str(first), "--out", str(tmp_path / "d.npy"), "--size", "-8"]) == 2
    assert "--size must be a positive width" in capsys.readouterr().err
    assert main(["predict", "depth", str(first), "--out", str(tmp_path / "d.npy"), "--card", "raft"]) == 2
    assert "task: is 'flow'" in capsys.readouterr().err
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((10, 12, 3), np.uint8))
    assert main(["predict", "flow", str(first), str(small), "--out", str(tmp_path / "f.flo")]) == 2
    assert "differ in size" in capsys.readouterr().err
