import os
import pickle
import re
import struct

import pytest
import torch
from safetensors.torch import save_file

from geovis_ros.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    load_weights_into,
    read_safetensors_header,
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


def _weights_of(model: torch.nn.Module, path, change) -> str:
    """Save ``model``'s weights with ``change(name, tensor) -> tensor`` applied to the first weight."""
    tensors = {name: t.detach().clone() for name, t in model.state_dict().items()}
    first = next(name for name, t in tensors.items() if t.is_floating_point() and t.dim() > 1)
    tensors[first] = change(tensors[first])
    save_file(tensors, str(path))
    return first


@pytest.mark.parametrize(("change", "problem"), [
    (lambda t: t.to(torch.float16), "is torch.float16, the model expects torch.float32"),
    (lambda t: (t * 100).to(torch.int8), "is torch.int8, the model expects torch.float32"),
    (lambda t: torch.cat([t, t]), "has shape"),
    (lambda t: torch.full_like(t, float("nan")), r"holds \d+ non-finite value"),
], ids=["float16", "int8", "shape", "nan"])
def test_weights_of_the_wrong_dtype_shape_or_value_are_refused(tmp_path, change, problem):
    path = tmp_path / "pose.safetensors"
    name = _weights_of(PoseNet(), path, change)
    target = PoseNet()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=rf"does not fit PoseNet: '{re.escape(name)}' {problem}"):
        load_weights_into(target, path)
    for key, value in target.state_dict().items():  # nothing was loaded
        torch.testing.assert_close(value, before[key], equal_nan=True)


def test_huge_safetensors_header_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.safetensors"
    declared = 94 * 2**20
    with path.open("wb") as handle:  # a sparse file: the declared header really is there, all spaces
        handle.write(struct.pack("<Q", declared))
        handle.seek(8 + declared - 1)
        handle.write(b" ")
    with pytest.raises(CheckpointError, match=r"header declares 98566144 bytes, over the bound .* before reading"):
        load_weights(path)
    assert read_safetensors_header(save_weights(PoseNet(), tmp_path / "ok.safetensors"))


def test_header_longer_than_the_file_is_refused(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(CheckpointError, match="declares 1000 bytes, the file has 10"):
        load_weights(path)
