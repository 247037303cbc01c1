"""Server-side pieces of the seed 001 evaluation: time analysis budget, held-out retrains."""

from __future__ import annotations

import numpy as np
import pytest

from fedunl_flwr.phases import TrainedModel
from strategies.memorization_eval import (retrain_noise_floor, split_retrained,
                                          time_analysis)
from strategies.retrain import RetrainedModels


def history(accuracies: list[float], seconds_per_round: float) -> list[dict]:
    return [{"round": r + 1, "elapsed": seconds_per_round * (r + 1), "accuracy": a}
            for r, a in enumerate(accuracies)]


def retrained(accuracies: list[float], seconds_per_round: float = 10.0) -> RetrainedModels:
    model = TrainedModel(None, {}, history(accuracies, seconds_per_round), None)
    return RetrainedModels([model], [{"global_accuracy": accuracies[-1]}], [True])


def test_speedup_uses_a_common_round_budget() -> None:
    """Defect 1e: a short unlearning run must not get a speedup from its short budget."""
    retrain = retrained([0.2, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85])  # peaks at round 8
    unlearn = [[r + 1, 10.0 * (r + 1), a] for r, a in enumerate([0.6, 0.7, 0.72])]
    result = time_analysis(unlearn, retrain, unlearn_rounds=3, retrain_rounds=8)
    assert result["budget_rounds"] == 3
    assert result["retrain"]["rounds_to_peak"] == 3  # peak within the same 3 rounds
    assert result["unlearn"]["rounds_to_peak"] == 3
    assert result["speedup"] == pytest.approx(1.0)
    # Equal budgets: retraining's peak at round 8 vs unlearning's at round 2.
    unlearn8 = [[r + 1, 10.0 * (r + 1), a] for r, a in
                enumerate([0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])]
    result = time_analysis(unlearn8, retrain, unlearn_rounds=8, retrain_rounds=8)
    assert result["unlearn"]["rounds_to_peak"] == 2
    assert result["speedup"] == pytest.approx(80.0 / 20.0)


def test_peak_tolerance_zero_is_the_respective_peak() -> None:
    retrain = retrained([0.5, 0.795, 0.80])
    unlearn = [[1, 5.0, 0.79], [2, 10.0, 0.80]]
    strict = time_analysis(unlearn, retrain, 2, 3, tolerance=0.0)
    assert strict["retrain"]["rounds_to_peak"] == 2 and strict["unlearn"]["rounds_to_peak"] == 2
    loose = time_analysis(unlearn, retrain, 2, 3, tolerance=0.02)
    assert loose["unlearn"]["rounds_to_peak"] == 1


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
    assert floor["compared"].startswith("scoring set")
    assert floor["accuracy"][0] == pytest.approx(50.0)
    assert floor["delta"][0] == pytest.approx(50.0)   # 50 vs 0
    assert floor["delta"][4] == pytest.approx(25.0)   # 100 vs 75
    in_sample = retrain_noise_floor(correct, [0, 1, 2], [0, 1, 2], groups)
    assert in_sample["compared"].startswith("retrained model 0")
    assert retrain_noise_floor(correct[:1], [0], [0], groups) is None
