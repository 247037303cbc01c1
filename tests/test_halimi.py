"""Halimi et al. (seed 001 baseline): the ball projection, the ascent, and a real run that
forgets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord
from torch import nn

from clients.halimi import project_to_ball, projected_gradient_ascent
from fedunl_flwr.config import ConfigError, RunConfig
from fedunl_flwr.protocol import AscentSettings
from strategies.halimi import ball_radius, l2_distance, mean_arrays


def test_projection_moves_outside_points_onto_the_sphere_and_leaves_inside_ones() -> None:
    center = [torch.zeros(2), torch.zeros(1)]
    outside = [torch.tensor([3.0, 0.0]), torch.tensor([4.0])]  # distance 5
    assert project_to_ball(outside, center, 1.0) == 1.0
    torch.testing.assert_close(outside[0], torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(outside[1], torch.tensor([0.8]))
    inside = [torch.tensor([0.3, 0.0]), torch.tensor([0.4])]
    assert project_to_ball(inside, center, 1.0) == pytest.approx(0.5)
    torch.testing.assert_close(inside[0], torch.tensor([0.3, 0.0]))


def test_reference_is_the_unweighted_mean_and_the_radius_a_fraction_of_the_distance() -> None:
    a = ArrayRecord({"w": Array(np.array([0.0, 2.0], dtype=np.float32))})
    b = ArrayRecord({"w": Array(np.array([2.0, 4.0], dtype=np.float32))})
    mean = mean_arrays([a, b])
    np.testing.assert_array_equal(mean["w"].numpy(), np.array([1.0, 3.0], dtype=np.float32))
    assert mean["w"].numpy().dtype == np.float32
    ref = {"w": np.array([0.0, 0.0])}
    randoms = [{"w": np.array([3.0, 4.0])}, {"w": np.array([0.0, 1.0])}]
    assert l2_distance(ref, randoms[0], ["w"]) == 5.0
    assert ball_radius(ref, randoms, ["w"], 1 / 3) == pytest.approx((5 + 1) / 2 / 3)


def _separable(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic: two linearly separable classes (a property real data cannot promise a
    tiny model on a few steps), so the starting model is right on every sample."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=generator)
    return x, (x[:, 0] > 0).long()


def _fitted_model() -> nn.Module:
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-4.0, 0.0], [4.0, 0.0]]))
        model.bias.zero_()
    return model


def _moved(model: nn.Module, start: list[torch.Tensor]) -> float:
    with torch.no_grad():
        return math.sqrt(sum(float((p - s).pow(2).sum())
                             for p, s in zip(model.parameters(), start, strict=True)))


def test_ascent_unlearns_inside_the_ball_and_stops_at_the_target() -> None:
    x, y = _separable()
    model = _fitted_model()
    start = [p.detach().clone() for p in model.parameters()]
    settings = AscentSettings(learning_rate=0.5, epochs=50, radius=20.0, stop_accuracy=0.5,
                              batch_size=16, momentum=0.0, clip_norm=0.0)
    result = projected_gradient_ascent(model, x, y, settings, torch.Generator().manual_seed(1), 2)
    assert result["accuracy"] <= 0.5 < 1.0  # it forgot, and stopped once at the target
    assert result["epochs"] < 50
    moved = _moved(model, start)
    assert moved <= 20.0 + 1e-4 and moved == pytest.approx(result["distance"], rel=1e-4)


def test_a_small_ball_keeps_the_model_close_and_runs_every_epoch() -> None:
    x, y = _separable()
    model = _fitted_model()
    start = [p.detach().clone() for p in model.parameters()]
    settings = AscentSettings(learning_rate=0.5, epochs=3, radius=0.1, stop_accuracy=0.0,
                              batch_size=16, momentum=0.0, clip_norm=0.0)
    result = projected_gradient_ascent(model, x, y, settings, torch.Generator().manual_seed(1), 2)
    assert result["epochs"] == 3 and result["steps"] == 3 * 4
    assert _moved(model, start) == pytest.approx(0.1, rel=1e-4)
    assert result["accuracy"] == 1.0  # too small a ball to forget


def test_the_clip_bounds_each_step_and_momentum_carries_the_ascent_further() -> None:
    x, y = _separable()
    start_model = _fitted_model()
    start = [p.detach().clone() for p in start_model.parameters()]

    def ascend(momentum: float, clip: float) -> float:
        model = _fitted_model()
        settings = AscentSettings(learning_rate=0.5, epochs=1, radius=1e6, stop_accuracy=-1.0,
                                  batch_size=16, momentum=momentum, clip_norm=clip)
        result = projected_gradient_ascent(model, x, y, settings,
                                           torch.Generator().manual_seed(1), 2)
        assert result["steps"] == 4
        return _moved(model, start)

    assert ascend(0.0, 0.01) <= 4 * 0.5 * 0.01 + 1e-6  # each step at most lr x clip
    assert ascend(0.9, 0.01) > ascend(0.0, 0.01)


def test_halimi_keys_are_validated_and_its_scope_is_client_only() -> None:
    with pytest.raises(ConfigError, match="halimi-radius must be > 0"):
        RunConfig.from_mapping({"halimi-radius": 0.0})
    with pytest.raises(ConfigError, match="halimi-epochs must be >= 1"):
        RunConfig.from_mapping({"halimi-epochs": 0})
    from strategies.halimi import Halimi
    from tests.test_memorization_unlearning import FOUR, config_with, validate

    assert Halimi.scopes == ("client",)
    with pytest.raises(ConfigError, match="erases one client"):
        validate(config_with(strategy="halimi", forget_scope="client", forget_clients="0,1"),
                 FOUR)
    settings = AscentSettings(0.1, 2, 1.5, 0.1, 8, 0.9, 5.0)
    assert AscentSettings.from_config(settings.encode()) == settings
    with pytest.raises(ValueError, match="needs config"):
        AscentSettings.from_config({"epochs": 1})


def test_real_nodes_ascend_only_for_their_own_request() -> None:
    """A crafted single-sample ascent would read that sample's gradient off the reply."""
    from fedunl_flwr.client_app import check_query_allowed

    node = {"partition-id": 0, "data-file": "/d.npz", "forget-request": "all"}
    check_query_allowed("projected_ascent", {"forget-all": True}, node)  # its own request
    with pytest.raises(PermissionError, match="own unlearning request is 'all'"):
        check_query_allowed("projected_ascent", {"forget-samples": "3"}, node)
    with pytest.raises(PermissionError, match="not set"):
        check_query_allowed("projected_ascent", {"forget-all": True},
                            {"partition-id": 0, "data-file": "/d.npz"})


@pytest.mark.simulation
def test_halimi_moves_the_leaving_clients_most_memorized_samples_toward_retraining(
        tmp_path, data_dir) -> None:
    """A Flower run at the defaults on the seed 001 tests' request. Measured: the ascent
    stops at τ = 0.12 after 8 steps, 0.40 from w_ref (radius 7.4); top two memorization
    groups (20 samples) original 85%, Halimi 35%, retrained 30% (fine-tuning alone: 50%);
    test accuracy 47% (retrained 50%). Before momentum, clipping and τ = 1.2 x chance
    the ascent moved 0.53 in 35 steps and the groups ended at fine-tuning's 50%."""
    from experiments.simulate import simulate
    from tests.memorization_checks import assert_moves_toward_retraining
    from tests.test_memorization_unlearning import BASE

    paths = simulate({**BASE, "strategy": "halimi", "results-dir": str(tmp_path),
                      "data-dir": str(data_dir)}, engine="inprocess")
    summary = json.loads((paths["unlearn"] / "summary.json").read_text())
    ascent = summary["ascent"]
    assert ascent["client"] == 0 and ascent["distance"] <= summary["radius"] * (1 + 1e-4)
    assert ascent["accuracy"] <= 0.12 and ascent["epochs"] < 5  # τ stopped it
    assert_moves_toward_retraining(summary, "Halimi")
    assert summary["test_accuracy"]["unlearned"] > 40  # post-training recovered the task


def test_tau_defaults_to_just_above_chance() -> None:
    from strategies.halimi import stop_accuracy

    assert stop_accuracy(-1.0, 10) == pytest.approx(0.12)
    assert stop_accuracy(0.3, 10) == 0.3
