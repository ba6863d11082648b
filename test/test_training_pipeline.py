import csv
import json

import numpy as np
import pytest
import torch

from geovis_ros.cli import main
from geovis_ros.data.sequence import SequenceFrame
from geovis_ros.geometry.camera import Intrinsics
from geovis_ros.models.checkpoint import load_checkpoint, load_weights
from geovis_ros.training.datasets import (
    FLOW_INIT_METHOD_KEY,
    HELD_OUT_SCENE,
    MANIFEST,
    TRAIN_SCENES,
    Batcher,
    SequenceArrays,
    TrainingDataError,
    load_cache,
)
from geovis_ros.training.loop import TrainConfig, TrainingError, learning_rate

W, H = 64, 48
SHIFT_PX = 3
DEPTH_M = 4.0


def _sliding_frames(count: int, seed: int) -> list[SequenceFrame]:
    """A camera translating right in front of a textured fronto-parallel wall at DEPTH_M.

    The image content moves SHIFT_PX pixels left per frame, so the flow is exactly (-SHIFT_PX, 0).
    """
    rng = np.random.default_rng(seed)
    texture = (rng.random((H, W + SHIFT_PX * count, 3)) * 255).astype(np.uint8)
    k = Intrinsics(60.0, 60.0, (W - 1) / 2, (H - 1) / 2, W, H)
    frames = []
    for i in range(count):
        pose = np.eye(4)
        pose[0, 3] = i * SHIFT_PX * DEPTH_M / k.fx
        flow = np.zeros((H, W, 2), np.float32)
        flow[..., 0] = -SHIFT_PX
        valid = np.ones((H, W), bool)
        valid[:, :SHIFT_PX] = False
        frames.append(SequenceFrame(f"{i:06d}", i * 100_000_000, texture[:, i * SHIFT_PX: i * SHIFT_PX + W].copy(), k,
                                    np.full((H, W), DEPTH_M, np.float32), pose, flow, valid))
    return frames


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    for index in range(2):
        SequenceArrays.from_frames(_sliding_frames(5, index), with_flow_init=True).save(folder / f"seq_{index:05d}.npz")
    (folder / MANIFEST).write_text(json.dumps({"split": "train", "handmade": True}))
    return folder


def test_splits_hold_out_a_scene():
    assert HELD_OUT_SCENE not in TRAIN_SCENES


def test_sequence_arrays_roundtrip(cache):
    sequences = load_cache(cache)
    assert len(sequences) == 2
    seq = sequences[0]
    assert seq.rgb.shape == (5, H, W, 3) and seq.depth.shape == (5, H, W) and seq.poses.shape == (5, 4, 4)
    assert seq.flow.shape == (4, H, W, 2) and seq.flow_init.shape == (4, H, W, 2)
    assert seq.intrinsics.fx == 60.0
    # DIS on a pure translation of a random texture recovers most of the motion.
    assert float(np.median(seq.flow_init[..., 0])) == pytest.approx(-SHIFT_PX, abs=0.5)
    with pytest.raises(TrainingDataError):
        SequenceArrays.from_frames(_sliding_frames(1, 0))


def test_batches_have_documented_shapes(cache):
    batcher = Batcher(load_cache(cache), np.random.default_rng(0))
    depth = batcher.depth_batch(3, (W, H))
    assert depth["image"].shape == (3, 3, H, W) and depth["depth"].shape == (3, 1, H, W)
    assert depth["fx"].tolist() == [60.0] * 3 and bool(depth["valid"].all())
    flow = batcher.flow_batch(2, (32, 32), with_backward_init=True)
    assert flow["flow"].shape == (2, 2, 32, 32) and flow["valid"].dtype == torch.bool
    assert flow["flow_init_backward"].shape == (2, 2, 32, 32)
    assert torch.allclose(flow["flow"][:, 0].abs(), torch.tensor(float(SHIFT_PX)))
    pose = batcher.pose_batch(4, (W, H))
    # Twist translation magnitude equals the camera step, whatever the augmentation did to its sign.
    np.testing.assert_allclose(pose["twist"][:, 0].abs().numpy(), SHIFT_PX * DEPTH_M / 60.0, rtol=1e-5)
    triplet = batcher.triplet_batch(2, (W, H))
    assert triplet["target"].shape == (2, 3, H, W) and triplet["k"].shape == (2, 3, 3)
    with pytest.raises(TrainingDataError):
        batcher.flow_batch(1, (128, 128))


def test_learning_rate_schedule():
    assert learning_rate(0, 1000, 1e-3, warmup=10) == pytest.approx(1e-4)
    assert learning_rate(10, 1000, 1e-3, warmup=10) == pytest.approx(1e-3)
    assert learning_rate(1000, 1000, 1e-3, warmup=10) == pytest.approx(5e-5)


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(TrainingError):
        TrainConfig(task="segmentation", out_dir=tmp_path)
    with pytest.raises(TrainingError):
        TrainConfig(task="depth", out_dir=tmp_path, size=(60, 48))


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("task", "extra", "networks"),
    [
        ("depth", [], ["depth"]),
        ("flow", ["--size", "32x32"], ["flow"]),
        ("pose", [], ["pose"]),
        ("depth", ["--self-supervised", "--init", "none"], ["depth", "pose"]),
        ("flow", ["--self-supervised", "--init", "none", "--size", "32x32"], ["flow"]),
    ],
)
def test_train_smoke_and_resume(cache, tmp_path, task, extra, networks):
    out = tmp_path / "run"
    common = ["train", task, "--data", str(cache), "--batch", "2", "--size", f"{W}x{H}", "--out", str(out),
              "--seed", "1", "--no-progress", "--checkpoint-every", "1", "--threads", "1", *extra]
    assert main([*common, "--steps", "2"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
    for name in networks:
        tensors, metadata = load_weights(out / f"{name}.safetensors")
        assert metadata["network"] == name and metadata["step"] == "2"
        assert all(torch.isfinite(t).all() for t in tensors.values())
    assert main([*common, "--steps", "3", "--resume"]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3
    assert [int(r["step"]) for r in _rows(out / "log.csv")] == [1, 2, 3]


def test_resume_is_deterministic(cache, tmp_path):
    def run(out, steps, resume=False):
        args = ["train", "pose", "--data", str(cache), "--batch", "2", "--size", f"{W}x{H}", "--out", str(out),
                "--seed", "3", "--no-progress", "--threads", "1", "--steps", str(steps)]
        assert main(args + (["--resume"] if resume else [])) == 0

    run(tmp_path / "straight", 4)
    run(tmp_path / "resumed", 2)
    run(tmp_path / "resumed", 4, resume=True)
    straight, _ = load_weights(tmp_path / "straight" / "pose.safetensors")
    resumed, _ = load_weights(tmp_path / "resumed" / "pose.safetensors")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor)


def test_train_errors_are_clean(cache, tmp_path, capsys):
    assert main(["train", "depth", "--data", str(tmp_path / "missing"), "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    out = tmp_path / "run"
    base = ["--data", str(cache), "--batch", "1", "--size", f"{W}x{H}", "--out", str(out), "--no-progress",
            "--threads", "1", "--steps", "1"]
    assert main(["train", "pose", *base]) == 0
    assert main(["train", "depth", *base, "--resume"]) == 2
    assert "is for task 'pose'" in capsys.readouterr().err


def test_synth_on_the_fly_prerender_and_evaluate(tmp_path, capsys):
    small = ["--size", "64x48"]
    assert main(["train", "pose", "--data", "synth", "--steps", "1", "--batch", "2", *small, "--render-size", "64x48",
                 "--synth-frames", "3", "--synth-pool", "1", "--out", str(tmp_path / "run"), "--no-progress",
                 "--threads", "1"]) == 0
    cache = tmp_path / "val"
    assert main(["train", "prerender", "--out", str(cache), "--split", "val", "--scene", "corridor",
                 "--sequences", "1", "--frames", "2", *small]) == 0
    assert len(load_cache(cache)) == 1
    assert main(["train", "evaluate", "pose", "--data", str(cache), "--weights", str(tmp_path / "run"), *small]) == 0
    assert "rotation_error_deg" in capsys.readouterr().out
    assert main(["train", "prerender", "--out", str(tmp_path / "bad"), "--split", "train", "--scene", "corridor",
                 "--sequences", "1", "--frames", "2", *small]) == 2
    assert "not allowed" in capsys.readouterr().err


def test_flow_init_written_by_an_older_initialisation_is_recomputed(cache, tmp_path):
    with np.load(cache / "seq_00000.npz") as data:
        arrays = {name: data[name] for name in data.files if name != FLOW_INIT_METHOD_KEY}
    arrays["flow_init"] = np.zeros_like(arrays["flow_init"])  # as if another method had written it
    np.savez(tmp_path / "old.npz", **arrays)
    seq = SequenceArrays.load(tmp_path / "old.npz")
    assert float(np.median(seq.flow_init[..., 0])) == pytest.approx(-SHIFT_PX, abs=0.5)
    assert SequenceArrays.load(cache / "seq_00000.npz").flow_init.dtype == np.float16
