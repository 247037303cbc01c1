"""Pieces of seed 001 on hand-checkable tensors: time analysis, held-out retrains,
the mean gradient, the server's mean and the update statistic."""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord
from torch import nn

from clients.local_training import mean_loss_gradient
from fedunl_flwr.config import RunConfig
from fedunl_flwr.phases import TrainedModel
from fedunl_flwr.store import PhaseStore
from strategies.fedmemeraser import Reset, reset_by_update
from strategies.memorization_eval import (
    retrain_noise_floor,
    split_retrained,
    time_analysis,
    unweighted_mean,
)
from strategies.retrain import RetrainedModels


def history(accuracies: list[float], seconds_per_round: float) -> list[dict]:
    return [{"round": r + 1, "elapsed": seconds_per_round * (r + 1), "accuracy": a}
            for r, a in enumerate(accuracies)]


def retrained(accuracies: list[float], seconds_per_round: float = 10.0) -> RetrainedModels:
    # Only the history is read: no arrays, no phase store.
    model = TrainedModel(cast(ArrayRecord, None), {}, history(accuracies, seconds_per_round),
                         cast(PhaseStore, None))
    return RetrainedModels([model], [{"global_accuracy": accuracies[-1]}], [True])


def test_speedup_uses_a_common_round_budget() -> None:
    """Defect 1e: a short unlearning run must not get a speedup from its short budget."""
    retrain = retrained([0.2, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85])  # peaks at round 8
    unlearn = [[r + 1, 10.0 * (r + 1), a] for r, a in enumerate([0.6, 0.7, 0.72])]
    result = time_analysis(unlearn, retrain, unlearn_rounds=3, retrain_rounds=8)
    assert result.budget_rounds == 3
    assert result.retrain["rounds_to_peak"] == 3  # peak within the same 3 rounds
    assert result.unlearn["rounds_to_peak"] == 3
    assert result.speedup == pytest.approx(1.0)
    # Equal budgets: retraining's peak at round 8 vs unlearning's at round 2.
    unlearn8 = [[r + 1, 10.0 * (r + 1), a] for r, a in
                enumerate([0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])]
    result = time_analysis(unlearn8, retrain, unlearn_rounds=8, retrain_rounds=8)
    assert result.unlearn["rounds_to_peak"] == 2
    assert result.speedup == pytest.approx(80.0 / 20.0)


def test_peak_tolerance_zero_is_the_respective_peak() -> None:
    retrain = retrained([0.5, 0.795, 0.80])
    unlearn = [[1, 5.0, 0.79], [2, 10.0, 0.80]]
    strict = time_analysis(unlearn, retrain, 2, 3, tolerance=0.0)
    assert strict.retrain["rounds_to_peak"] == 2 and strict.unlearn["rounds_to_peak"] == 2
    loose = time_analysis(unlearn, retrain, 2, 3, tolerance=0.02)
    assert loose.unlearn["rounds_to_peak"] == 1


def test_heldout_split_is_disjoint() -> None:
    assert split_retrained(3, False) == ([0, 1, 2], [0, 1, 2])
    scoring, reference = split_retrained(4, True)
    assert scoring == [0, 1] and reference == [2, 3]
    with pytest.raises(ValueError, match="even"):
        split_retrained(3, True)


def test_noise_floor_row() -> None:
    groups = np.array([0, 0, 4, 4])
    correct = np.array([[True, False, True, True],    # scoring set
                        [False, False, True, True],   # reference set
                        [False, False, True, False]])
    floor = retrain_noise_floor(correct, [0], [1, 2], groups)
    assert floor is not None
    assert floor.compared.startswith("scoring set")
    assert floor.accuracy[0] == pytest.approx(50.0)
    assert floor.delta[0] == pytest.approx(50.0)   # 50 vs 0
    assert floor.delta[4] == pytest.approx(25.0)   # 100 vs 75
    in_sample = retrain_noise_floor(correct, [0, 1, 2], [0, 1, 2], groups)
    assert in_sample is not None
    assert in_sample.compared.startswith("retrained model 0")
    assert retrain_noise_floor(correct[:1], [0], [0], groups) is None


def test_unweighted_mean_counts_every_client_once() -> None:
    """The server's 1/|K_r| mean (seed 001 eq. 13): sample counts do not weight it."""
    mean = unweighted_mean([{"w": np.array([1.0, 3.0]), "b": np.array([2.0])},
                            {"w": np.array([3.0, 5.0]), "b": np.array([-2.0])},
                            {"w": np.array([2.0, 1.0]), "b": np.array([3.0])}])
    assert mean["w"].tolist() == [2.0, 3.0] and mean["b"].tolist() == [1.0]
    assert mean["w"].dtype == torch.float64
    with pytest.raises(ValueError, match="no client"):
        unweighted_mean([])


def test_mean_loss_gradient_of_a_zero_linear_model_is_hand_checked() -> None:
    """With zero weights softmax is uniform: dL/dz = 1/C - onehot(y), dL/dW = (p - y) x^T."""
    model = nn.Linear(2, 3)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    y = torch.tensor([0, 2])
    third = 1.0 / 3.0
    dz = torch.tensor([[third - 1, third, third], [third, third, third - 1]])
    expected_w = (dz.T @ x) / 2  # mean over the two samples
    for batch_size in (1, 256):  # batching must not change the mean
        grads = mean_loss_gradient(model, x, y, batch_size=batch_size)
        torch.testing.assert_close(grads["weight"], expected_w)
        torch.testing.assert_close(grads["bias"], dz.mean(0))
    assert all(p.grad is None for p in model.parameters())  # nothing left behind


def test_update_statistic_resets_the_entries_that_moved_least() -> None:
    """The update statistic is w_1 - w_0: the rho fraction with the smallest |update| is
    re-drawn (``ResetFedAvg`` applies it to round 1's aggregate only; the contract and
    simulation tests run it)."""
    original = {"0.weight": torch.zeros(2, 5), "0.bias": torch.zeros(2)}
    aggregate = {"0.weight": torch.arange(1.0, 11.0).reshape(2, 5), "0.bias": torch.ones(2)}
    config = RunConfig.from_mapping({"strategy": "fedmemeraser", "rho": 0.3, "seed": 3})
    resetter = Reset(config, None)
    reset = reset_by_update(original, ArrayRecord(aggregate), resetter).to_torch_state_dict()
    moved = reset["0.weight"] != aggregate["0.weight"]
    # reset-tensors 'all' (the default) ranks biases too: 12 entries, rho 0.3 -> 4 with
    # the smallest |update|: both biases (1, 1) and the weights 1 and 2, re-drawn within
    # PyTorch's +-1/sqrt(fan_in = 5).
    assert moved.flatten().tolist() == [True] * 2 + [False] * 8
    assert bool((reset["0.bias"] != aggregate["0.bias"]).all())
    for value in (reset["0.weight"].flatten()[:2], reset["0.bias"]):
        assert value.abs().max() <= 5 ** -0.5
    assert torch.equal(resetter.masks["0.weight"], moved)


def test_bootstrap_intervals_resample_seeds_and_samples() -> None:
    from experiments.memorization_tables import bootstrap_interval

    assert bootstrap_interval([np.zeros(10), np.zeros(5)]) == (0.0, 0.0)
    low, high = bootstrap_interval([np.ones(10), np.ones(3)])
    assert low == high == 1.0  # every sample better than retraining: beyond noise
    # Half the samples +1, half -1: an interval around 0.
    mixed = [np.array([1.0, -1.0] * 10), np.array([1.0, -1.0] * 10)]
    low, high = bootstrap_interval(mixed)
    assert low < 0 < high
    # Seeds that disagree widen the interval beyond what one seed's samples give.
    one = bootstrap_interval([np.full(20, 0.5)])
    two = bootstrap_interval([np.full(20, 0.9), np.full(20, 0.1)])
    assert one == (0.5, 0.5) and two[0] < 0.5 < two[1]
    assert all(math.isnan(v) for v in bootstrap_interval([np.zeros(0)]))
