"""NoT (seed 001 baseline): the negation on hand tensors, its key, and a real run that forgets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedunl_flwr.config import ConfigError, RunConfig
from strategies.weight_negation import negate_layers


def test_only_the_first_layers_weights_are_negated() -> None:
    arrays = {"conv1.weight": np.array([[1.0, -2.0]]), "conv1.bias": np.array([3.0]),
              "fc.weight": np.array([[4.0]]), "fc.bias": np.array([5.0])}
    negated, names = negate_layers(arrays, ["conv1.weight", "fc.weight"], 1)
    assert names == ["conv1.weight"]
    np.testing.assert_array_equal(negated["conv1.weight"], [[-1.0, 2.0]])
    for kept in ("conv1.bias", "fc.weight", "fc.bias"):
        np.testing.assert_array_equal(negated[kept], arrays[kept])
    np.testing.assert_array_equal(arrays["conv1.weight"], [[1.0, -2.0]])  # input untouched
    both, names = negate_layers(arrays, ["conv1.weight", "fc.weight"], 2)
    assert names == ["conv1.weight", "fc.weight"]
    np.testing.assert_array_equal(both["fc.weight"], [[-4.0]])


def test_the_key_is_validated_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match="not-negated-layers must be >= 1"):
        RunConfig.from_mapping({"not-negated-layers": 0})
    from tests.test_memorization_unlearning import FOUR, config_with, validate

    with pytest.raises(ConfigError, match="not-negated-layers is 99 but the model has"):
        validate(config_with(strategy="not", forget_scope="client", forget_clients="0",
                             not_negated_layers=99), FOUR)


@pytest.mark.simulation
def test_not_run_forgets_the_leaving_clients_data(tmp_path, data_dir) -> None:
    """A real Flower simulation: after the negation and two fine-tuning rounds the
    model's accuracy on the leaving client's data D_u is below the original's while its
    test accuracy recovered."""
    from experiments.simulate import simulate

    paths = simulate({
        "scenario": "fashion-mnist-dir0.3", "num-clients": 4, "samples-per-client": 200,
        "test-samples-per-client": 50, "num-server-rounds": 4, "model": "cnn",
        "model-width": 16, "local-epochs": 2, "unlearn-rounds": 2, "retrain-seeds": 1,
        "forget-scope": "client", "forget-clients": "0", "strategy": "not",
        "results-dir": str(tmp_path), "data-dir": str(data_dir)}, engine="inprocess")
    summary = json.loads((paths["unlearn"] / "summary.json").read_text())
    (negated,) = summary["negated"]  # the input layer's weight, by default
    assert negated.endswith("weight")
    du = summary["du_accuracy"]  # percentages
    print("NoT", negated, du, summary["test_accuracy"])
    assert du["unlearned"] < du["original"]
    assert summary["test_accuracy"]["unlearned"] > 40
