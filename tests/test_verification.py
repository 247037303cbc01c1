"""Verification beyond accuracy: the trigger, the poisoned samples, the attack success
rate and the membership-inference attacks by hand; a client that plants the backdoor;
runs where the backdoored original obeys its trigger and the retrained model does not,
and where the original's MIA efficacy on D_u exceeds the retrained model's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clients.fedunl_client import FedunlClient
from experiments.cross_tables import build_cross_report
from experiments.memorization_tables import build_memorization_report
from experiments.simulate import simulate
from fedunl_flwr.config import ConfigError
from fedunl_flwr.data.scenarios import ClientData
from fedunl_flwr.metrics.evaluation import per_sample_outputs
from fedunl_flwr.metrics.verification import (
    apply_trigger,
    attack_success_rate,
    backdoor_positions,
    best_threshold,
    mia_efficacy,
    mia_feature_values,
    threshold_attack_accuracy,
)
from tests.test_memorization_unlearning import config_with


# --- by hand --------------------------------------------------------------------------------
def test_the_trigger_is_an_x_one_pixel_from_the_bottom_right_corner_on_every_channel() -> None:
    images = torch.zeros(2, 3, 8, 8)
    out = apply_trigger(images)
    assert not images.any()  # a copy
    patch = out[:, :, 4:7, 4:7]
    expected = torch.tensor([[1.0, -1, 1], [-1, 1, -1], [1, -1, 1]])
    assert torch.equal(patch, expected.expand(2, 3, 3, 3))
    out[:, :, 4:7, 4:7] = 0
    assert not out.any()  # nothing else changed
    with pytest.raises(ValueError, match="cannot carry"):
        apply_trigger(torch.zeros(1, 1, 3, 3))


def test_the_poisoned_samples_are_the_fraction_outside_the_target_class() -> None:
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1, 1, 2, 2])  # 8 outside class 0
    chosen = backdoor_positions(labels, 0.5, 0, torch.Generator().manual_seed(0))
    assert len(chosen) == 4 and (labels[chosen] != 0).all()
    assert list(chosen) == sorted(chosen)
    again = backdoor_positions(labels, 0.5, 0, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(chosen, again)


def test_attack_success_rate_counts_only_images_outside_the_target() -> None:
    labels = np.array([0, 0, 1, 2, 3, 4])
    predictions = np.array([0, 5, 0, 0, 3, 0])  # of the four non-target images, 3 -> target
    assert attack_success_rate(predictions, labels, 0) == 75.0
    with pytest.raises(ValueError, match="outside"):
        attack_success_rate(np.zeros(2), np.zeros(2), 0)


def test_mia_features_point_up_for_members_and_the_entropies_match_their_formulas() -> None:
    model = torch.nn.Linear(3, 4)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    out = per_sample_outputs(model, x, y)
    p = model(x).softmax(dim=1).detach().numpy()
    entropy = -(p * np.log(p)).sum(1)
    py = p[np.arange(5), y.numpy()]
    rest = np.where(np.eye(4)[y.numpy()] == 1, 0.0, p * np.log(1 - p)).sum(1)
    np.testing.assert_allclose(out["entropy"], entropy, rtol=1e-5)
    np.testing.assert_allclose(out["m_entropy"], -(1 - py) * np.log(py) - rest, rtol=1e-5)
    np.testing.assert_allclose(mia_feature_values(out, "entropy"), -out["entropy"])
    np.testing.assert_allclose(mia_feature_values(out, "confidence"), out["true_prob"])


def test_threshold_attack_by_hand() -> None:
    members = np.array([0.9, 0.8, 0.72, 0.71, 0.2])
    nonmembers = np.array([0.1, 0.3, 0.75, 0.25])
    # t = 0.71: members 4/5 at or above, non-members 3/4 below: 0.775, the only best
    assert best_threshold(members, nonmembers) == 0.71
    targets, others = np.array([0.95, 0.6]), np.array([0.1, 0.2, 0.8, 0.3])
    assert threshold_attack_accuracy(members, nonmembers, targets, others) == 100 * 0.5 * (
        0.5 + 0.75)


def test_mia_efficacy_calls_look_alikes_of_the_members_members() -> None:
    rng = np.random.default_rng(0)
    members, nonmembers = rng.uniform(0.9, 1.0, 300), rng.uniform(0.0, 0.5, 300)
    assert mia_efficacy(members, nonmembers, rng.uniform(0.9, 1.0, 50), rng) == 100.0
    assert mia_efficacy(members, nonmembers, rng.uniform(0.0, 0.5, 50), rng) == 0.0


def test_bad_verification_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="mia-feature must be one of"):
        config_with(mia_feature="loss")
    with pytest.raises(ConfigError, match="backdoor-fraction"):
        config_with(backdoor_fraction=0.0)


# --- the client -----------------------------------------------------------------------------
def test_a_named_client_plants_the_trigger_and_relabels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = ClientData(0, "synthetic", rng.integers(0, 255, (40, 12, 12), dtype=np.uint8),
                      np.arange(40) % 4, rng.integers(0, 255, (8, 12, 12), dtype=np.uint8),
                      np.arange(8) % 4)

    def client(**settings) -> FedunlClient:
        config = config_with(results_dir=str(tmp_path), model="cnn", model_width=4,
                             scenario="mnist-iid", **settings)
        return FedunlClient(data, config, "cnn", 1, tuple("abcd"))

    plain = client()
    poisoned = client(backdoor_clients="0,3", backdoor_fraction=0.5, backdoor_target=2)
    chosen = poisoned.backdoor_positions
    assert len(chosen) == 15 and (data.y_train[chosen] != 2).all()  # half of 30
    assert (poisoned.y_train[chosen] == 2).all()
    assert torch.equal(poisoned.x_train[chosen], apply_trigger(plain.x_train[chosen]))
    untouched = np.setdiff1d(np.arange(40), chosen)
    assert torch.equal(poisoned.x_train[untouched], plain.x_train[untouched])
    assert len(client(backdoor_clients="1").backdoor_positions) == 0
    with pytest.raises(ValueError, match="backdoor-target 7 is not a class"):
        client(backdoor_clients="0", backdoor_target=7)


def test_a_node_with_its_own_data_refuses_to_plant_a_backdoor(tmp_path: Path) -> None:
    from fedunl_flwr.client_app import _client_for

    site = tmp_path / "site.npz"
    rng = np.random.default_rng(0)
    np.savez(site, x_train=rng.integers(0, 255, (20, 12, 12), dtype=np.uint8),
             y_train=np.arange(20) % 4, x_test=rng.integers(0, 255, (8, 12, 12),
                                                            dtype=np.uint8),
             y_test=np.arange(8) % 4)
    config = config_with(scenario="mnist-iid", backdoor_clients="0")
    with pytest.raises(ValueError, match="does not poison it"):
        _client_for(config, 0, str(site))


# --- runs -----------------------------------------------------------------------------------
BACKDOOR = {"scenario": "mnist-iid", "num-clients": 4, "samples-per-client": 200,
            "test-samples-per-client": 50, "num-server-rounds": 5, "model": "cnn",
            "model-width": 16, "local-epochs": 2, "unlearn-rounds": 2, "retrain-seeds": 1,
            "forget-scope": "client", "forget-clients": "0", "backdoor-clients": "0",
            "backdoor-fraction": 1.0, "strategy": "finetune"}


@pytest.mark.simulation
def test_the_backdoored_original_obeys_the_trigger_and_the_retrained_model_does_not(
        tmp_path: Path, data_dir: Path) -> None:
    """Client 0's every sample outside class 0 carries the trigger. Measured: ASR
    original 99.96%, fine-tuned 4.9%, retrained 1.1%; MIA efficacy on D_u original 96.5%,
    fine-tuned 8.5%, retrained 5.0% (threshold attack 68.8%, 26.5%, 18.4%)."""
    paths = simulate({**BACKDOOR, "results-dir": str(tmp_path), "data-dir": str(data_dir)},
                     engine="inprocess")
    summary = json.loads((paths["unlearn"] / "summary.json").read_text())
    checks = summary["verification"]
    print("verification", json.dumps(checks))
    asr, mia = checks["backdoor_asr"], checks["mia_efficacy"]
    assert checks["backdoor_clients"] == [0] and not checks["skipped"]
    assert asr["original"] >= 80.0 and asr["retrained"][0] <= 20.0
    assert mia["original"] > mia["retrained"][0] + 20.0
    train = json.loads((paths["train"] / "summary.json").read_text())
    assert train["config"]["backdoor"] == {"clients": [0], "fraction": 1.0, "target": 0}
    # Table 1's report gains both columns.
    written = build_memorization_report({}, [paths], tmp_path / "report")
    table = next(p for p in written if p.suffix == ".md").read_text()
    assert "MIA Efficacy on D_u (%)" in table and "Backdoor ASR (%)" in table
    assert f"{asr['unlearned']:.2f}" in table

    # The cross table: a seed 000 route on a class-level request of the same original
    # beside the seed 001 method (client 1: all of client 0's samples now carry label 0).
    route = simulate({**BACKDOOR, "strategy": "delete-retrain", "forget-scope": "class",
                      "forget-clients": "1", "forget-classes": "1", "unlearn-rounds": 1,
                      "results-dir": str(tmp_path), "data-dir": str(data_dir)},
                     engine="inprocess")
    assert route["train"] == paths["train"]  # one backdoored original for both
    written = build_cross_report({}, [route, paths], tmp_path / "cross")
    by_scope = {p.stem: pd.read_csv(p, index_col=0) for p in written if p.suffix == ".csv"}
    client, by_class = by_scope["cross_client"], by_scope["cross_class"]
    assert list(client.index) == ["Fine-tune", "Original", "Retrained"]
    assert client.at["Fine-tune", "backdoor ASR (%)"] == pytest.approx(asr["unlearned"], abs=1e-3)
    assert client.at["Original", "MIA efficacy (%)"] == pytest.approx(mia["original"], abs=1e-3)
    assert next(iter(by_class.index)) == "Delete" and "collateral damage (pts)" in by_class
    routed = json.loads((route["unlearn"] / "summary.json").read_text())
    assert by_class.at["Delete", "backdoor ASR (%)"] == pytest.approx(
        routed["verification"]["backdoor_asr"]["unlearned"], abs=1e-3)
    assert 0 <= by_class.at["Original", "forget-class acc. (%)"] <= 100
