import os
import pickle

import pytest
import torch

from geovis_ros.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    load_weights_into,
    save_checkpoint,
    save_weights,
)
from geovis_ros.models.depth import DepthNet
from geovis_ros.models.pose import PoseNet


class _Exploit:
    """Unpickling this object would create the marker file (a stand-in for arbitrary code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_weights_roundtrip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    source = PoseNet()
    path = save_weights(source, tmp_path / "pose.safetensors", {"step": 7})
    target = PoseNet()
    metadata = load_weights_into(target, path)
    assert metadata == {"step": "7"}
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[name], tensor)
    assert not list(tmp_path.glob("*.tmp"))


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = save_weights(PoseNet(), tmp_path / "pose.safetensors")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights_into(DepthNet(), path)


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\xff" * 64])
def test_corrupted_weights_are_refused(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_weights(path)


def test_missing_files_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(tmp_path / "none.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_training_checkpoint_roundtrip(tmp_path):
    import numpy as np

    rng = np.random.default_rng(5)
    state = {"step": 3, "networks": {"pose": PoseNet().state_dict()}, "numpy_rng": rng.bit_generator.state,
             "torch_rng": torch.get_rng_state()}
    loaded = load_checkpoint(save_checkpoint(tmp_path / "ckpt.pt", state))
    assert loaded["step"] == 3 and loaded["numpy_rng"] == rng.bit_generator.state
    torch.testing.assert_close(loaded["torch_rng"], state["torch_rng"])


def test_malicious_torch_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"step": 1, "payload": _Exploit(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(path)
    assert not marker.exists()


def test_malicious_raw_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"payload": _Exploit(str(marker))}, protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()
    # Sanity check of the test itself: plain unpickling WOULD run the payload.
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_non_dict_checkpoint_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(path)
