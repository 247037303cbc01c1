"""FedAU (Gu et al. 2024): the auxiliary labels and the linear unlearning by hand, the
client's joint training of the auxiliary head, the record in the original's key, and a
run that moves the leaving client's most memorized samples toward retraining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clients.fedau import (
    AUXILIARY_HEADS,
    auxiliary_labels,
    carried_head,
    initial_head,
    train_with_auxiliary_head,
)
from clients.local_training import TrainSettings
from experiments.simulate import simulate
from fedunl_flwr.config import ConfigError
from fedunl_flwr.protocol import ForgetSelection
from fedunl_flwr.records import get_weights
from fedunl_flwr.training_records import client_record_path
from strategies.fedau import AuxiliaryHeads, class_unlearned_classifier, unlearned_classifier
from tests.memorization_checks import assert_moves_toward_retraining
from tests.test_memorization_unlearning import (  # tiny_client: the fixture, used below
    BASE,
    FOUR,
    config_with,
    tiny_client,  # noqa: F401
    validate,
)


# --- the math, by hand --------------------------------------------------------------------
def test_auxiliary_labels_are_random_other_labels_only_where_forgotten() -> None:
    labels = torch.arange(100) % 10
    forget = torch.arange(100) < 50
    out = auxiliary_labels(labels, forget, 10, torch.Generator().manual_seed(0))
    assert (out[:50] != labels[:50]).all() and (out[50:] == labels[50:]).all()
    assert out.min() >= 0 and out.max() <= 9 and len(set(out[:50].tolist())) > 3


def test_unlearning_mixes_the_classifier_with_the_mean_head() -> None:
    w = {"classifier.weight": np.ones((2, 3), np.float32),
         "classifier.bias": np.zeros(2, np.float32), "features.w": np.full(4, 7.0)}
    heads = [{"weight": np.full((2, 3), 3.0), "bias": np.full(2, 1.0)},
             {"weight": np.full((2, 3), 5.0), "bias": np.full(2, 3.0)}]
    out = unlearned_classifier(w, heads, alpha=0.1)
    np.testing.assert_allclose(out["classifier.weight"], 0.1 * 1 + 0.9 * 4)  # mean W2 = 4
    np.testing.assert_allclose(out["classifier.bias"], 0.9 * 2)
    assert out["classifier.weight"].dtype == np.float32
    np.testing.assert_array_equal(out["features.w"], w["features.w"])  # backbone unchanged
    np.testing.assert_allclose(unlearned_classifier(w, heads, 1.0)["classifier.weight"], 1.0)


def test_class_unlearning_subtracts_the_mean_head() -> None:
    w = {"classifier.weight": np.ones((2, 3), np.float32),
         "classifier.bias": np.zeros(2, np.float32), "features.w": np.full(4, 7.0)}
    heads = [{"weight": np.full((2, 3), 0.5), "bias": np.array([2.0, 0.0])},
             {"weight": np.full((2, 3), 1.5), "bias": np.array([4.0, -2.0])}]
    out = class_unlearned_classifier(w, heads)
    np.testing.assert_allclose(out["classifier.weight"], 0.0)  # 1 - mean(0.5, 1.5)
    np.testing.assert_allclose(out["classifier.bias"], [-3.0, 1.0])
    np.testing.assert_array_equal(out["features.w"], w["features.w"])


def test_the_head_restarts_from_a_mix_of_the_classifier_and_its_last_state() -> None:
    classifier = nn.Linear(3, 2)
    with torch.no_grad():
        classifier.weight.fill_(1.0)
        classifier.bias.fill_(0.0)
    first = initial_head(classifier, None, 0.5)
    assert torch.equal(first.weight, classifier.weight)
    later = initial_head(classifier, {"weight": np.full((2, 3), 3.0), "bias": np.ones(2)}, 0.5)
    assert torch.allclose(later.weight, torch.full((2, 3), 2.0))
    assert torch.allclose(later.bias, torch.full((2,), 0.5))


def test_the_record_joins_the_key_with_the_request_and_configures_its_clients() -> None:
    spec = AuxiliaryHeads.for_request(config_with(strategy="fedau", forget_scope="samples",
                                                  forget_samples="2:5,1"))
    assert spec.key() == {"gamma": 0.5, "clients": {"2": {"forget-samples": "1,5"}}}
    assert spec.train_config(2) == {"auxiliary-gamma": 0.5, "forget-samples": "1,5"}
    assert spec.train_config(0) == {}
    whole = AuxiliaryHeads.for_request(config_with(strategy="fedau", forget_scope="client",
                                                   forget_clients="1"))
    assert whole.train_config(1)["forget-all"] is True
    by_class = AuxiliaryHeads.for_request(config_with(strategy="fedau", forget_scope="class",
                                                      forget_clients="0,2",
                                                      forget_classes="3"))
    assert by_class.key()["clients"] == {"0": {"forget-classes": "3"},
                                         "2": {"forget-classes": "3"}}
    assert by_class.train_config(1) == {}


@pytest.mark.parametrize(("clients", "classes"), [("0", "1,2"), ("", "1")])
def test_requests_fedau_cannot_serve_are_refused(clients, classes) -> None:
    with pytest.raises(ConfigError, match="class scope forgets one class"):
        validate(config_with(strategy="fedau", forget_scope="class", forget_clients=clients,
                             forget_classes=classes), FOUR)
    with pytest.raises(ConfigError, match=r"fedau-alpha must be in \[0, 1\]"):
        config_with(strategy="fedau", fedau_alpha=1.5)


# --- the client -----------------------------------------------------------------------------
def test_the_head_learns_the_random_labels_while_the_model_learns_the_true_ones() -> None:
    torch.manual_seed(0)
    classifier = nn.Linear(48, 4)
    model = nn.Sequential()
    model.add_module("classifier", classifier)
    x = torch.randn(64, 48)  # 48 features: the 32 random labels are linearly separable
    y = x[:, :4].argmax(1)  # learnable true labels
    forget = torch.arange(64) < 32
    y_b = auxiliary_labels(y, forget, 4, torch.Generator().manual_seed(1))
    head = initial_head(classifier, None, 0.5)
    settings = TrainSettings("sgd", 0.5, 60, 16, momentum=0.0)
    train_with_auxiliary_head(model, head, x, y, y_b, settings, torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9
        assert (head(x)[:32].argmax(1) == y_b[:32]).float().mean() > 0.6  # memorised noise
        assert (head(x)[:32].argmax(1) == y[:32]).float().mean() < 0.3


def test_for_a_class_the_head_starts_at_zero_and_carries_over_to_predict_it() -> None:
    classifier = nn.Linear(3, 2)
    first = carried_head(classifier, None)
    assert not first.weight.any() and not first.bias.any()
    later = carried_head(classifier, {"weight": np.full((2, 3), 3.0), "bias": np.ones(2)})
    assert torch.equal(later.weight, torch.full((2, 3), 3.0))


def test_a_client_keeps_its_head_in_the_training_phase_folder(tiny_client, tmp_path) -> None:  # noqa: F811
    weights = get_weights(tiny_client.model)
    phase = "mnist-iid/train-0123456789ab"
    config = {"phase": "train", "server-round": 1, "records-to": phase,
              "auxiliary-gamma": 0.5, **ForgetSelection(everything=True).encode()}
    returned, count, _ = tiny_client.fit(weights, config)
    assert count == 40 and len(returned) == len(weights)
    path = client_record_path(tmp_path, phase, AUXILIARY_HEADS, 0)
    with np.load(path) as stored:
        assert stored["weight"].shape == (4, 16) and int(stored["round"]) == 1
    reply = tiny_client.answer_query("auxiliary_head", None,
                                     {"records-to": phase, "forget-all": True})
    np.testing.assert_array_equal(reply.head["weight"].numpy(), np.load(path)["weight"])
    with pytest.raises(ValueError, match="holds no auxiliary head"):
        tiny_client.answer_query("auxiliary_head", None,
                                 {"records-to": "mnist-iid/train-ffffffffffff",
                                  "forget-all": True})


# --- a run ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paths(tmp_path_factory, data_dir) -> dict[str, Path]:
    results = tmp_path_factory.mktemp("fedau")
    return simulate({**BASE, "strategy": "fedau", "results-dir": str(results),
                     "data-dir": str(data_dir)}, engine="inprocess")


@pytest.mark.simulation
def test_fedau_moves_the_leaving_clients_most_memorized_samples_toward_retraining(
        paths) -> None:
    """Measured: top two groups (20 samples) original 80%, FedAU 55%, retrained 5%;
    the FedAU original (client 0 trains the auxiliary head) reaches 42.9% test accuracy
    (the plain original 45.0%), the unlearned model 40.7%."""
    summary = json.loads((paths["unlearn"] / "summary.json").read_text())
    assert summary["alpha"] == 0.1 and summary["heads_from"] == [0]
    assert summary["head_rounds"] == [BASE["num-server-rounds"]] and summary["client_epochs"] == 0
    train = json.loads((paths["train"] / "summary.json").read_text())
    assert train["config"]["records"]["auxiliary-heads"]["clients"] == {"0": {"forget-all": True}}
    assert train["records_bytes"]["auxiliary-heads"] > 0
    assert sorted(p.name for p in (paths["train"] / "records" / "auxiliary-heads").iterdir()
                  ) == ["client-0.npz"]  # only the client of the request trains one
    assert_moves_toward_retraining(summary, "FedAU", margin=0.85)


@pytest.mark.simulation
def test_fedau_class_scope_removes_the_class(data_dir, tmp_path) -> None:
    """Every client forgets class 1 (trouser): the retrained model never sees it. Measured:
    D_u (the class's training samples) original 97.5%, FedAU 0.0%, retrained 0.0%; test
    accuracy (all ten classes) original 45.4%, FedAU 38.2%, retrained 46.3%."""
    paths = simulate({**BASE, "strategy": "fedau", "forget-scope": "class",
                      "forget-clients": "0,1,2,3", "forget-classes": "1",
                      "results-dir": str(tmp_path), "data-dir": str(data_dir)},
                     engine="inprocess")
    summary = json.loads((paths["unlearn"] / "summary.json").read_text())
    du = summary["memorization"]["group_accuracy"]
    print("FedAU class scope: D_u", du["original"][-1], du["unlearned"][-1],
          du["retrained"][0][-1], "test", summary["test_accuracy"])
    assert summary["alpha"] is None and summary["heads_from"] == [0, 1, 2, 3]
    assert du["unlearned"][-1] < 0.2 * du["original"][-1]
    test = summary["test_accuracy"]
    assert test["unlearned"] > 0.7 * test["original"]  # the other classes stay
