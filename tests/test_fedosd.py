"""FedOSD (Pan et al. 2025): the UCE loss, the orthogonal direction and the post-training
projection by hand, the leaving client's UCE descent, and a run that moves the leaving
client's most memorized samples to where the retrained model has them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from clients.fedosd import uce_descent, unlearning_cross_entropy
from experiments.simulate import simulate
from fedunl_flwr.config import ConfigError
from fedunl_flwr.records import get_weights, set_weights
from strategies.fedosd import (
    learning_rate,
    orthogonal_direction,
    orthogonal_step,
    post_training_step,
    without_component,
)
from tests.memorization_checks import assert_moves_toward_retraining
from tests.test_memorization_unlearning import (  # tiny_client: the fixture, used below
    BASE,
    FOUR,
    config_with,
    tiny_client,  # noqa: F401
    validate,
)


# --- the math, by hand --------------------------------------------------------------------
def test_uce_is_bounded_and_smallest_when_the_true_label_is_unlikely() -> None:
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0], [-10.0, 10.0]])
    labels = torch.tensor([0, 0, 0])
    loss = unlearning_cross_entropy(logits, labels)
    assert loss[0].item() == pytest.approx(-math.log(1 - 0.25))  # p_y = 1/2
    assert loss[1].item() == pytest.approx(math.log(2), abs=1e-6)  # p_y = 1: the maximum
    assert loss[2].item() == pytest.approx(0.0, abs=1e-6)  # p_y = 0: the minimum


def test_the_direction_is_orthogonal_to_every_remaining_gradient_and_keeps_the_norm() -> None:
    target = np.array([1.0, 1.0, 1.0])
    retained = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # span{e1, e2}
    direction = orthogonal_direction(target, retained)
    np.testing.assert_allclose(direction, [0.0, 0.0, math.sqrt(3)], atol=1e-12)  # e3, ‖g_u‖
    assert np.allclose(retained @ direction, 0.0)
    # Without remaining clients the target's own gradient; inside their span: zero.
    np.testing.assert_allclose(orthogonal_direction(target, np.zeros((0, 0))), target)
    assert not orthogonal_direction(np.array([1.0, 2.0, 0.0]), retained).any()
    # Tiny singular values are dropped: a near-duplicate row adds no direction.
    near = np.array([[1.0, 0.0, 0.0], [1.0, 1e-9, 0.0]])
    np.testing.assert_allclose(orthogonal_direction(np.array([1.0, 1.0, 0.0]), near),
                               [0.0, math.sqrt(2), 0.0], atol=1e-6)


def test_post_training_removes_the_component_toward_the_original() -> None:
    away = np.array([1.0, 0.0])
    np.testing.assert_allclose(without_component(np.array([3.0, 4.0]), away), [0.0, 5.0])
    assert not without_component(np.array([2.0, 0.0]), away).any()  # nothing left
    np.testing.assert_allclose(without_component(np.array([3.0, 4.0]), np.zeros(2)), [3.0, 4.0])
    assert learning_rate(0.1, 0) == 0.1 and learning_rate(0.1, 2) == pytest.approx(0.1 * 0.999**2)


def test_the_server_steps_use_pseudo_gradients_and_average_buffers() -> None:
    w = {"w": np.array([1.0, 1.0, 1.0], np.float32), "running": np.array([0.0], np.float32)}
    # lr 0.5: client 0 (leaving) moved by -0.5 (1, 1, 1) -> g_0 = (1, 1, 1); client 1 by
    # -0.5 e1 -> g_1 = e1; client 2 by -0.5 e2 -> g_2 = e2.
    models = {0: {"w": np.array([0.5, 0.5, 0.5]), "running": np.array([9.0])},
              1: {"w": np.array([0.5, 1.0, 1.0]), "running": np.array([2.0])},
              2: {"w": np.array([1.0, 0.5, 1.0]), "running": np.array([4.0])}}
    out = orthogonal_step(w, models, [0], ["w"], 0.5)
    np.testing.assert_allclose(out["w"], [1.0, 1.0, 1.0 - 0.5 * math.sqrt(3)], atol=1e-6)
    np.testing.assert_allclose(out["running"], [3.0])  # the remaining clients' mean
    assert out["w"].dtype == np.float32
    initial = {"w": np.array([0.0, 1.0, 1.0]), "running": np.array([0.0])}  # w - w_init = e1
    post = post_training_step(w, {1: models[1], 2: models[2]}, initial, ["w"], 0.5)
    # g_1 = e1 loses its e1 part (nothing left), g_2 = e2 stays: mean (0, 0.5, 0).
    np.testing.assert_allclose(post["w"], [1.0, 0.75, 1.0])


def test_requests_fedosd_cannot_serve_are_refused() -> None:
    with pytest.raises(ConfigError, match="handles forget-scope client"):
        validate(config_with(strategy="fedosd", forget_scope="samples",
                             forget_samples="0:1,2"), FOUR)
    with pytest.raises(ConfigError, match=r"fedosd-lr must be > 0"):
        config_with(strategy="fedosd", fedosd_lr=0.0)
    with pytest.raises(ConfigError, match=r"fedosd-rounds must be >= 1"):
        config_with(strategy="fedosd", fedosd_rounds=0)


def test_the_leaving_client_descends_uce_on_its_own_data(tiny_client) -> None:  # noqa: F811
    weights = get_weights(tiny_client.model)
    config = {"forget-classes": "1", "phase": "unlearn", "server-round": 1,
              "optimizer": "sgd", "learning-rate": 0.5, "momentum": 0.0, "local-epochs": 3}
    reply = uce_descent(tiny_client, weights, config)
    assert reply.num_examples == 10 and reply.local_epochs == 3
    positions = torch.arange(1, 40, 4)
    x, y = tiny_client.x_train[positions], tiny_client.y_train[positions]
    with torch.no_grad():
        tiny_client.model.eval()
        after = unlearning_cross_entropy(tiny_client.model(x), y).mean().item()
        set_weights(tiny_client.model, weights)
        before = unlearning_cross_entropy(tiny_client.model(x), y).mean().item()
    assert after < before


# --- a run ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def summary(tmp_path_factory, data_dir) -> dict:
    results = tmp_path_factory.mktemp("fedosd")
    paths = simulate({**BASE, "strategy": "fedosd", "results-dir": str(results),
                      "data-dir": str(data_dir)}, engine="inprocess")
    return json.loads((paths["unlearn"] / "summary.json").read_text())


@pytest.mark.simulation
def test_fedosd_moves_the_leaving_clients_most_memorized_samples_toward_retraining(
        summary) -> None:
    """Measured: top two groups (20 samples) original 85%, FedOSD 30%, retrained 30%;
    test accuracy 45% -> 59% (post-training keeps training)."""
    assert summary["unlearning_rounds"] == 5 and summary["post_training_rounds"] == 2
    assert_moves_toward_retraining(summary, "FedOSD")
    assert summary["test_accuracy"]["unlearned"] > 40
