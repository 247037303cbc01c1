"""FedRecovery (Zhang et al. 2023): the residuals and round weights by hand, the noise,
and a run that moves the leaving client's most memorized samples toward retraining."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.simulate import simulate
from fedunl_flwr.config import ConfigError
from fedunl_flwr.training_records import ClientUpdates, RoundUpdates
from strategies.fedrecovery import recover, recovery_correction, round_residual
from tests.memorization_checks import assert_moves_toward_retraining
from tests.test_memorization_unlearning import BASE, FOUR, config_with, validate


def _round(t: int, start: list[float], updates: dict[int, list[float]],
           weights: dict[int, float]) -> RoundUpdates:
    return RoundUpdates(t, {"w": np.array(start)},
                        {k: {"w": np.array(u)} for k, u in updates.items()}, weights)


# --- the math, by hand --------------------------------------------------------------------
def test_the_residual_is_the_rounds_step_with_minus_without_the_leaving_clients() -> None:
    stored = _round(1, [0.0, 0.0], {0: [3.0, 0.0], 1: [0.0, 3.0], 2: [3.0, 3.0]},
                    {0: 1.0, 1: 1.0, 2: 1.0})
    # With all: (2, 2); without client 0: (1.5, 3); r = (0.5, -1) = (1/3)(Δ_0 - mean_{1,2}).
    np.testing.assert_allclose(round_residual(stored, [0])["w"], [0.5, -1.0])
    # Weighted: p = (2, 1, 1): with all (2.25, 1.5), without 0 (1.5, 3).
    weighted = _round(1, [0.0, 0.0], {0: [3.0, 0.0], 1: [0.0, 3.0], 2: [3.0, 3.0]},
                      {0: 2.0, 1: 1.0, 2: 1.0})
    np.testing.assert_allclose(round_residual(weighted, [0])["w"], [0.75, -1.5])
    absent = _round(1, [0.0, 0.0], {1: [0.0, 3.0]}, {1: 1.0})
    assert not round_residual(absent, [0])["w"].any()  # client 0 did not train
    alone = _round(1, [0.0, 0.0], {0: [3.0, 1.0]}, {0: 1.0})
    np.testing.assert_allclose(round_residual(alone, [0])["w"], [3.0, 1.0])  # only it did


def test_rounds_are_weighted_by_the_global_steps_squared_norm() -> None:
    # Global models w1 = 0, w2 = (3, 4) (step norm² 25), final (3, 4) + (0, 5)... norm² 25.
    rounds = [_round(1, [0.0, 0.0], {0: [2.0, 0.0], 1: [0.0, 0.0]}, {0: 1.0, 1: 1.0}),
              _round(2, [3.0, 4.0], {0: [0.0, 4.0], 1: [0.0, 0.0]}, {0: 1.0, 1: 1.0})]
    final = {"w": np.array([3.0, 9.0])}
    correction, weights = recovery_correction(iter(rounds), final, [0])
    assert weights == pytest.approx([0.5, 0.5])
    # r_1 = (1, 0) - 0 = (1, 0); r_2 = (0, 2); Σ p_i r_i = (0.5, 1).
    np.testing.assert_allclose(correction["w"], [0.5, 1.0])
    unequal = {"w": np.array([3.0, 4.0 + 10.0])}  # second step norm² 100: p = (0.2, 0.8)
    correction, weights = recovery_correction(iter(rounds), unequal, [0])
    assert weights == pytest.approx([0.2, 0.8])
    np.testing.assert_allclose(correction["w"], [0.2, 1.6])
    with pytest.raises(ValueError, match="no stored round"):
        recovery_correction(iter([]), final, [0])


def test_noise_goes_only_to_parameters_and_keeps_dtypes() -> None:
    final = {"w": np.ones(1000, dtype=np.float32), "running_var": np.ones(3, np.float32)}
    correction = {"w": np.full(1000, 0.5), "running_var": np.zeros(3)}
    rng = np.random.default_rng(0)
    plain = recover(final, correction, 0.0, ["w"], rng)
    np.testing.assert_array_equal(plain["w"], np.full(1000, 0.5, np.float32))
    noisy = recover(final, correction, 0.1, ["w"], rng)
    assert noisy["w"].dtype == np.float32 and noisy["running_var"].dtype == np.float32
    assert 0.09 < float(np.std(noisy["w"] - 0.5)) < 0.11
    np.testing.assert_array_equal(noisy["running_var"], np.ones(3, np.float32))


def test_requests_fedrecovery_cannot_serve_are_refused() -> None:
    with pytest.raises(ConfigError, match="handles forget-scope client"):
        validate(config_with(strategy="fedrecovery", forget_scope="class", forget_clients="0",
                             forget_classes="1"), FOUR)
    with pytest.raises(ConfigError, match=r"fedrecovery-sigma must be >= 0"):
        config_with(strategy="fedrecovery", fedrecovery_sigma=-0.1)


# --- a run ----------------------------------------------------------------------------------
#: The leaving client's data differs from the others' (Dirichlet 0.3): its updates carry
#: what the retrained model lacks. On the IID split of the other baselines' tests the
#: residuals are small and the top groups move by one sample (85% -> 80%, retrained 30%).
REQUEST = {**BASE, "scenario": "fashion-mnist-dir0.3", "strategy": "fedrecovery"}
ROUNDS = 4
assert REQUEST["num-server-rounds"] == ROUNDS


@pytest.fixture(scope="module")
def summary(tmp_path_factory, data_dir) -> dict:
    results = tmp_path_factory.mktemp("fedrecovery")
    paths = simulate({**REQUEST, "results-dir": str(results), "data-dir": str(data_dir)},
                     engine="inprocess")
    records = paths["train"] / "records" / ClientUpdates(1).folder
    assert sorted(p.name for p in records.glob("round-*.json")) == [
        f"round-{t:04d}.json" for t in range(1, ROUNDS + 1)]
    return json.loads((paths["unlearn"] / "summary.json").read_text())


@pytest.mark.simulation
def test_fedrecovery_moves_the_leaving_clients_most_memorized_samples_toward_retraining(
        summary) -> None:
    """Measured: top two groups (20 samples) original 95%, FedRecovery 0%, retrained 0%;
    D_u 35% -> 5% (retrained 11%); test accuracy 42% -> 24% (the held-out retrained model
    33%: the one-shot correction is not followed by any training; the noise is off)."""
    assert len(summary["round_weights"]) == ROUNDS
    assert sum(summary["round_weights"]) == pytest.approx(1.0)
    assert summary["records_bytes"] > 0 and summary["correction_norm"] > 0
    assert summary["sigma"] == 0.0 and summary["client_epochs"] == 0  # server only
    assert_moves_toward_retraining(summary, "FedRecovery")
    du = summary["memorization"]["group_accuracy"]
    assert du["unlearned"][-1] < du["original"][-1]
