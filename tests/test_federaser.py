"""FedEraser (Liu et al. 2021): the calibration math by hand, the stored client updates,
a run that moves the leaving client's most memorized samples toward retraining, and
`flwr run`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.simulate import simulate
from fedunl_flwr.aggregation import weighted_mean
from fedunl_flwr.config import ConfigError
from fedunl_flwr.phases import initial_arrays
from fedunl_flwr.records import from_record
from fedunl_flwr.training_records import ClientUpdates, RoundUpdates
from strategies.federaser import (
    calibrate,
    calibrated_step,
    uncalibrated_step,
    update_norm,
)
from tests.memorization_checks import assert_moves_toward_retraining
from tests.test_memorization_unlearning import BASE, FOUR, config_with, validate


# --- the math, by hand --------------------------------------------------------------------
def test_norm_and_calibration_rescale_the_whole_parameter_vector() -> None:
    new = {"w": np.array([3.0, 0.0]), "b": np.array([4.0]), "buffer": np.array([100.0])}
    assert update_norm(new, ["w", "b"]) == 5.0  # the buffer is not a parameter
    scaled = calibrate(new, 10.0, ["w", "b"])  # ‖U_old‖ = 10: direction kept, norm 10
    np.testing.assert_allclose(scaled["w"], [6.0, 0.0])
    np.testing.assert_allclose(scaled["b"], [8.0])
    assert "buffer" not in scaled
    zero = calibrate({"w": np.zeros(2), "b": np.zeros(1)}, 10.0, ["w", "b"])
    assert all(not v.any() for v in zero.values())  # no direction: no step


def test_weighted_mean_uses_the_weights() -> None:
    values = {0: {"w": np.array([1.0])}, 2: {"w": np.array([4.0])}}
    np.testing.assert_allclose(weighted_mean(values, {0: 1.0, 2: 3.0}, ["w"])["w"], [3.25])


def _round(updates: dict[int, dict[str, np.ndarray]], weights: dict[int, float]) -> RoundUpdates:
    return RoundUpdates(1, {}, updates, weights)


def test_the_first_step_adds_the_remaining_clients_weighted_update() -> None:
    start = {"w": np.array([1.0, 1.0], dtype=np.float32)}
    stored = _round({0: {"w": np.array([2.0, 0.0])}, 1: {"w": np.array([0.0, 4.0])},
                     2: {"w": np.array([100.0, 100.0])}}, {0: 1.0, 1: 3.0, 2: 5.0})
    step = uncalibrated_step(start, stored, [0, 1])  # client 2 leaves: its update is gone
    np.testing.assert_allclose(step["w"], [1.0 + 0.5, 1.0 + 3.0])
    assert step["w"].dtype == np.float32


def test_a_calibrated_step_keeps_each_clients_stored_norm_and_averages_buffers() -> None:
    current = {"w": np.zeros(2, dtype=np.float32), "running": np.array([1.0]),
               "count": np.array(5, dtype=np.int64)}
    # New local models: client 0 moved (1, 0), client 1 moved (0, 2).
    new = {0: {"w": np.array([1.0, 0.0]), "running": np.array([3.0]), "count": np.array(7)},
           1: {"w": np.array([0.0, 2.0]), "running": np.array([5.0]), "count": np.array(9)}}
    # Stored updates of the same clients at that retained round: norms 3 and 1.
    stored = _round({0: {"w": np.array([0.0, 3.0])}, 1: {"w": np.array([1.0, 0.0])}},
                    {0: 1.0, 1: 1.0})
    out = calibrated_step(current, new, stored, ["w"])
    # Ũ_0 = 3 · (1, 0), Ũ_1 = 1 · (0, 1); mean (1.5, 0.5).
    np.testing.assert_allclose(out["w"], [1.5, 0.5])
    np.testing.assert_allclose(out["running"], [4.0])  # buffers: mean of the new ones
    assert out["count"] == 8 and out["count"].dtype == np.int64
    assert out["w"].dtype == np.float32


def test_requests_federaser_cannot_serve_are_refused() -> None:
    with pytest.raises(ConfigError, match="fraction-train must be 1"):
        validate(config_with(strategy="federaser", forget_scope="client", forget_clients="0",
                             fraction_train=0.5), FOUR)
    with pytest.raises(ConfigError, match="handles forget-scope client"):
        validate(config_with(strategy="federaser", forget_scope="class", forget_clients="0",
                             forget_classes="1"), FOUR)
    with pytest.raises(ConfigError, match=r"federaser-interval must be >= 1"):
        config_with(strategy="federaser", federaser_interval=0)


# --- a run ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir) -> dict[str, dict[str, Path]]:
    results = tmp_path_factory.mktemp("federaser")
    base = {**BASE, "results-dir": str(results), "data-dir": str(data_dir)}
    return {name: simulate({**base, "strategy": name}, engine="inprocess")
            for name in ("federaser", "fedavg")}


@pytest.mark.simulation
def test_the_original_is_trained_with_its_records_and_the_same_weights(runs) -> None:
    """The records join the training key only for the method that asks for them; they do
    not change the training: both originals hold the same weights."""
    with_records, plain = Path(runs["federaser"]["train"]), Path(runs["fedavg"]["train"])
    assert with_records != plain
    with np.load(with_records / "global.npz") as a, np.load(plain / "global.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    folder = with_records / "records" / ClientUpdates(2).folder
    assert sorted(p.name for p in folder.glob("round-*.json")) == ["round-0001.json",
                                                                    "round-0003.json"]
    # Round 1 started from the initial model, and an update is the client's model minus it.
    config = config_with(**{k.replace("-", "_"): v for k, v in BASE.items()})
    initial = from_record(initial_arrays(config, 10, 0))
    with np.load(folder / "round-0001.npz") as stored:
        for name, value in initial.items():
            np.testing.assert_array_equal(stored[f"global/{name}"], value)
        assert {n.split("/")[0] for n in stored.files} == {"global", "client-0", "client-1",
                                                           "client-2", "client-3"}
    summary = json.loads((with_records / "summary.json").read_text())
    assert summary["records_bytes"][folder.name] == sum(f.stat().st_size
                                                        for f in folder.iterdir())
    # Every original carries its clients' CSL record (4 clients x 200 samples, float64).
    plain_records = json.loads((plain / "summary.json").read_text())["records_bytes"]
    assert set(plain_records) == {"csl"} and plain_records["csl"] > 4 * 200 * 8
    assert summary["records_bytes"]["csl"] == plain_records["csl"]


@pytest.mark.simulation
def test_federaser_moves_the_leaving_clients_most_memorized_samples_toward_retraining(
        runs) -> None:
    """On the leaving client's two most memorized groups (20 samples) the rebuilt model
    lands near the retrained one, far from the original (measured: original 85%,
    FedEraser 30%, retrained 30%), and below the original on all of D_u."""
    summary = json.loads((runs["federaser"]["unlearn"] / "summary.json").read_text())
    assert summary["retained_rounds"] == [1, 3] and summary["calibrated_rounds"] == [3]
    assert BASE["local-epochs"] == 2 and summary["calibration_epochs"] == 1  # ceil(0.5 x 2)
    assert summary["records_bytes_per_retained_round"] > 0
    assert_moves_toward_retraining(summary, "FedEraser")
    du = summary["memorization"]["group_accuracy"]
    assert du["unlearned"][-1] < du["original"][-1]
