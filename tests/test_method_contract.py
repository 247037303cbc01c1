"""The contract every registered method keeps, checked for each one over the in-process grid.

For every name in the registry: a request outside the method's scopes is refused before
any phase folder exists; a tiny request runs to a stored, evaluated unlearned model with
a summary that names the method; the report builder of the method's family reads that
summary. A new method gets this test for free by registering itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.fair_tables import build_fair_report
from experiments.memorization_tables import build_memorization_report
from experiments.simulate import simulate
from fedunl_flwr.config import ConfigError
from fedunl_flwr.methods import all_methods
from strategies import get_unlearning_method
from strategies.memorization_eval import memorization_summary
from tests.test_fair_unlearning import BASE as CLASS_REQUEST
from tests.test_fair_unlearning import forget_class
from tests.test_memorization_unlearning import BASE as CLIENT_REQUEST

SCOPES = ("client", "class", "samples")


def request_for(name: str, data_dir: Path) -> dict:
    """A tiny request in the first scope the method handles."""
    method = get_unlearning_method(name)
    assert method is not None
    if "client" in method.scopes:
        return {**CLIENT_REQUEST, **SMALLER, "strategy": name, "retrain-seeds": 1,
                "heldout-retrains": False, "mia-feature": "confidence"}
    return {**CLASS_REQUEST, "strategy": name, "forget-classes": str(forget_class(data_dir)),
            "mia-feature": "confidence"}


#: The contract needs a run, not a good model: half the rounds, samples and epochs of the
#: method tests' client requests (whether a method moves toward retraining is its own
#: test's; the class routes keep theirs: the editing routes stop at once on a weak model).
SMALLER = {"num-server-rounds": 2, "local-epochs": 1, "samples-per-client": 100,
           "unlearn-rounds": 1}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("contract")


@pytest.mark.simulation
@pytest.mark.parametrize("name", sorted(all_methods()))
def test_every_method_keeps_the_contract(name: str, results: Path, data_dir: Path,
                                         tmp_path: Path) -> None:
    method = get_unlearning_method(name)
    assert method is not None
    overrides = {**request_for(name, data_dir), "results-dir": str(results),
                 "data-dir": str(data_dir)}

    # Refused before any phase folder exists: a scope the method does not handle.
    other = next((s for s in SCOPES if s not in method.scopes), None)
    if other is not None:
        refused = tmp_path / "refused"
        with pytest.raises(ConfigError, match=rf"handles forget-scope .*not '{other}'"):
            simulate({**overrides, "results-dir": str(refused), "forget-scope": other,
                      "forget-clients": "0", "forget-classes": "0",
                      "forget-samples": "0:1"}, engine="inprocess")
        assert not [p for p in refused.rglob("*") if p.name.startswith(("train-", "unlearn-"))]

    # An outcome: a stored model, evaluated on every client, and a summary naming it.
    paths = simulate(overrides, engine="inprocess")
    summary = json.loads((paths["unlearn"] / "summary.json").read_text())
    assert summary["strategy"] == name and summary["phase"] == "unlearn"
    assert set(summary["per_client_class_accuracy"]) == set(summary["before"]
                                                         ["per_client_class_accuracy"])
    with np.load(paths["unlearn"] / "global.npz") as unlearned, \
            np.load(paths["train"] / "global.npz") as original:
        assert unlearned.files == original.files
        assert any(not np.array_equal(unlearned[k], original[k]) for k in unlearned.files), \
            f"{name} returned the original model unchanged"

    # Verification beyond accuracy: the membership-inference check of each model.
    if name != "retrain":
        mia = summary["verification"]["mia_efficacy"]
        assert 0 <= mia["original"] <= 100 and 0 <= mia["unlearned"] <= 100 and mia["retrained"]

    # The report builder of its family reads it.
    out = tmp_path / "report"
    if memorization_summary in method.evaluations:
        written = build_memorization_report({}, [paths], out)
        table = next(p for p in written if p.suffix == ".md").read_text()
        assert all_methods()[name].row_label in table or "Ours" in table
    elif summary["request"]["scope"] == "class":
        written = build_fair_report({name: paths["unlearn"]}, out)
        assert (out / "table4_global.csv") in written
        assert "MIA efficacy (%)" in (out / "verification.md").read_text()
    else:  # retraining: the reference every memorization evaluation reads
        assert summary["retrain"]["stores"], summary["retrain"]
