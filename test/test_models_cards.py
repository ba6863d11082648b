"""Model cards: presets parse and cite their source, malformed cards are refused naming the field,
and a model file finds its card (explicit, beside the ONNX, or the shipped one)."""

from __future__ import annotations

import copy

import pytest
import yaml

from geovis_ros.models.cards import CardError, card_for_model, load_card, parse_card, presets, read_card_file

RAFT = {
    "name": "r", "task": "flow", "licence": "BSD-3-Clause",
    "inputs": [{"index": 0, "role": "image1", "value_range": 255}, {"index": 1, "role": "image2", "value_range": 255}],
    "size": {"multiple": 8, "resize": "pad"},
    "outputs": {"flow": {"index": -1}},
}


def test_presets_parse_with_their_upstream_numbers():
    cards = presets()
    assert set(cards) >= {"geovis_depth", "geovis_flow", "depth_anything_v2", "depth_anything_v2_metric_indoor",
                          "depth_anything_v2_metric_outdoor", "metric3d_v2", "midas_dpt", "raft", "sea_raft",
                          "neuflow_v2"}
    for key, card in cards.items():
        assert card.key == key and card.licence and card.source
        if not key.startswith("geovis_"):
            assert card.source.startswith("github.com/")
    da = cards["depth_anything_v2"]
    assert (da.size.multiple, da.size.width, da.depth.kind, da.depth.is_metric) == (14, 518, "relative_inverse_depth",
                                                                                   False)
    assert da.inputs[0].mean == (0.485, 0.456, 0.406) and da.inputs[0].value_range == 1.0
    assert cards["depth_anything_v2_metric_indoor"].depth.max_depth == 20.0
    assert cards["depth_anything_v2_metric_outdoor"].depth.max_depth == 80.0
    metric3d = cards["metric3d_v2"]
    assert metric3d.size.fixed == (616, 1064) and metric3d.depth.canonical_fx == 1000.0 and metric3d.depth.is_metric
    assert metric3d.inputs[0].value_range == 255.0 and metric3d.inputs[0].std == (58.395, 57.12, 57.375)
    assert cards["midas_dpt"].size.multiple == 32 and cards["midas_dpt"].inputs[0].mean == (0.5, 0.5, 0.5)
    raft = cards["raft"]
    assert (raft.size.multiple, raft.flow.ref.index, raft.inputs[0].value_range) == (8, -1, 255.0)
    assert cards["neuflow_v2"].inputs[0].channels == "BGR"
    shipped = cards["geovis_depth"]
    assert shipped.depth.canonical_fx == 100.0 and shipped.uncertainty.ref.name == "log_var"
    assert [(i.role, i.ref.name) for i in cards["geovis_flow"].inputs][2] == ("flow_init", "flow_init")


@pytest.mark.parametrize("path, value, message", [
    (("task",), "segmentation", "task: must be one of ['depth', 'flow']"),
    (("licence",), None, "licence: is required"),
    (("inputs", 0, "role"), "image", "inputs[0].role: role 'image' is not an input of a flow model"),
    (("inputs", 1, "role"), "image1", "inputs[1].role: role 'image1' appears twice"),
    (("inputs", 0, "mean"), [0.5, 0.5], "inputs[0].mean: expected a list of 3 numbers"),
    (("inputs", 0, "std"), [1, 0, 1], "inputs[0].std: every value must be > 0"),
    (("inputs", 0, "value_range"), 100, "inputs[0].value_range: must be 1 (pixels / 255) or 255"),
    (("inputs", 0, "name"), "a", "inputs[0]: give exactly one of 'name' or 'index'"),
    (("inputs", 0, "colour"), "RGB", "inputs[0]: unknown field(s) ['colour']"),
    (("size", "multiple"), 0, "size.multiple: must be > 0"),
    (("size", "resize"), "crop", "size.resize: must be one of ['keep_aspect', 'pad', 'stretch']"),
    (("size", "fixed"), [100, 60], "size.fixed: [100, 60] is not a multiple of size.multiple 8"),
    (("outputs", "flow", "index"), "last", "outputs.flow.index: expected int, got 'last'"),
    (("outputs", "depth"), {"index": 0}, "outputs: unknown field(s) ['depth']"),
])
def test_malformed_cards_are_refused_naming_the_field(path, value, message):
    data = copy.deepcopy(RAFT)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(CardError) as caught:
        parse_card(data, "my.yaml")
    assert str(caught.value).startswith("model card my.yaml: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_depth_output_rules():
    depth = {"name": "d", "task": "depth", "licence": "x", "inputs": [{"index": 0, "role": "image"}]}
    with pytest.raises(CardError, match="outputs.depth.baseline_m: a disparity model needs baseline_m"):
        parse_card({**depth, "outputs": {"depth": {"index": 0, "kind": "disparity"}}}, "d")
    with pytest.raises(CardError, match="outputs.depth.canonical_fx: canonical focal scaling applies to metric"):
        parse_card({**depth, "outputs": {"depth": {"index": 0, "kind": "relative_depth", "canonical_fx": 500}}}, "d")
    with pytest.raises(CardError, match=r"inputs: a depth model needs inputs with roles \['image'\]"):
        parse_card({**depth, "inputs": [{"index": 0, "role": "intrinsics"}],
                    "outputs": {"depth": {"index": 0, "kind": "metric_depth"}}}, "d")
    stereo = parse_card({**depth, "outputs": {"depth": {"index": 0, "kind": "disparity", "baseline_m": 0.12}}}, "d")
    assert stereo.depth.is_metric and stereo.depth.baseline_m == 0.12


def test_card_files_presets_and_the_card_beside_the_model(tmp_path):
    own = tmp_path / "own.yaml"
    own.write_text(yaml.safe_dump(RAFT))
    assert load_card(str(own)).flow.ref.index == -1
    with pytest.raises(CardError, match="neither a preset .* nor a file"):
        load_card("no_such_card")
    with pytest.raises(CardError, match="task: is 'flow', but it is used as the depth model"):
        load_card("raft", "depth")
    model = tmp_path / "net.onnx"
    model.write_bytes(b"")
    assert card_for_model("flow", str(model)).key == "geovis_flow"  # no card: the shipped network's names
    (tmp_path / "net.yaml").write_text("base: raft\nsize: {fixed: [48, 64]}\n")
    beside = card_for_model("flow", str(model))
    assert beside.key == str(tmp_path / "net.yaml") and beside.size.fixed == (48, 64) and beside.size.multiple == 8
    assert card_for_model("flow", str(model), "sea_raft").key == "sea_raft"  # an explicit card wins
    assert card_for_model("depth").key == "geovis_depth"
    (tmp_path / "bad.yaml").write_text("base: nope\n")
    with pytest.raises(CardError, match="base: 'nope' is not a preset"):
        read_card_file(tmp_path / "bad.yaml")
    (tmp_path / "broken.yaml").write_text("inputs: [\n")
    with pytest.raises(CardError, match="cannot read it"):
        read_card_file(tmp_path / "broken.yaml")
