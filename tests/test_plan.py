import json

import pytest

from flow.core.errors import ConfigError
from flow.models import get_architecture
from flow.recipe.plan import MAX_PRUNE_K, CompressionPlan, LayerPlan

ARCH = get_architecture("digits_cnn")


def test_yaml_and_json_round_trip(tmp_path):
    plan = ARCH.uniform_plan(4, 3, 5).with_layer("conv2", keep=(5, 1, 3), prune_k=1.5)
    for name in ("p.yaml", "p.json"):
        plan.save(tmp_path / name)
        assert CompressionPlan.load(tmp_path / name) == CompressionPlan(
            input_bits=5, layers={**plan.layers, "conv2": LayerPlan(
                weight_bits=4, act_bits=3, keep=(1, 3, 5), prune_k=1.5)})


def test_hand_written_yaml(tmp_path):
    (tmp_path / "plan.yaml").write_text(
        "input_bits: 5\nlayers:\n"
        "  conv1: {weight_bits: 8, act_bits: 8}\n"
        "  conv2: {weight_bits: 2, act_bits: 2, keep: [0, 1]}\n"
        "  conv3: {weight_bits: 3, act_bits: 3}\n  conv4: {weight_bits: 4, act_bits: 4}\n"
        "  fc1: {weight_bits: 4, act_bits: null}\n"
    )
    plan = CompressionPlan.load(tmp_path / "plan.yaml")
    ARCH.check_plan(plan)
    assert plan.layers["conv2"] == LayerPlan(weight_bits=2, act_bits=2, keep=(0, 1))


@pytest.mark.parametrize("bits", [0, 9, 2.5, "4", True])
def test_bits_out_of_range_name_the_field(bits):
    data = ARCH.uniform_plan(4, 4, 5).to_dict()
    data["layers"]["conv3"]["weight_bits"] = bits
    with pytest.raises(ConfigError, match=r"layers\.conv3\.weight_bits: "):
        CompressionPlan.from_dict(data)


def test_unknown_layer_and_missing_layer_are_named():
    data = ARCH.uniform_plan(4, 4, 5).to_dict()
    data["layers"]["conv9"] = data["layers"].pop("conv3")
    plan = CompressionPlan.from_dict(data)
    with pytest.raises(ConfigError, match=r"\['conv9'\] do not exist.*\['conv3'\] are missing"):
        ARCH.check_plan(plan)


def test_bad_keep_and_classifier_rules():
    plan = ARCH.uniform_plan(4, 4, 5)
    with pytest.raises(ConfigError, match="channel 40 does not exist"):
        ARCH.check_plan(plan.with_layer("conv2", keep=(0, 40)))
    with pytest.raises(ConfigError, match="classifier keeps all"):
        ARCH.check_plan(plan.with_layer("fc1", keep=(0, 1)))
    with pytest.raises(ConfigError, match="fc1.act_bits"):
        ARCH.check_plan(plan.with_layer("fc1", act_bits=4))
    with pytest.raises(ConfigError, match="repeat"):
        CompressionPlan.from_dict({"input_bits": 4, "layers": {
            "a": {"weight_bits": 2, "act_bits": 2, "keep": [1, 1]}}})
    with pytest.raises(ConfigError, match="weight_bit: unknown key"):
        CompressionPlan.from_dict({"input_bits": 4, "layers": {"a": {"weight_bit": 2}}})


def test_missing_plan_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        CompressionPlan.load(tmp_path / "nope.yaml")


def test_one_bit_activations_and_bad_prune_k_are_refused():
    data = ARCH.uniform_plan(4, 4, 5).to_dict()
    data["layers"]["conv2"]["act_bits"] = 1
    data["layers"]["conv3"]["prune_k"] = -1.0
    with pytest.raises(ConfigError, match=r"conv2\.act_bits: .*2.*conv3\.prune_k"):
        CompressionPlan.from_dict(data)


def test_digest_follows_content():
    a, b = ARCH.uniform_plan(4, 4, 5), ARCH.uniform_plan(4, 4, 5)
    assert a.digest() == b.digest() != a.with_layer("conv2", weight_bits=3).digest()


def test_prune_k_out_of_range_is_named_at_load(tmp_path):
    """1.0e+300 was accepted; FINN failed four steps later with a raw pydantic dump."""
    data = ARCH.uniform_plan(4, 4, 5).to_dict()
    data["layers"]["conv2"]["prune_k"] = 1.0e300
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=rf"{path}: layers\.conv2\.prune_k: 1e\+300 is out of "
                                          rf"range; allowed: 0\.\.{MAX_PRUNE_K:g}"):
        CompressionPlan.load(path)
    data["layers"]["conv2"]["prune_k"] = MAX_PRUNE_K
    assert CompressionPlan.from_dict(data).layers["conv2"].prune_k == MAX_PRUNE_K
