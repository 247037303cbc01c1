"""Every seed 001 baseline through ``flwr run`` (SuperLink, Ray virtual clients) on a tiny
client-level request: one run whose ``strategy`` lists them all (one SuperLink and Ray
start instead of seven); each finishes and writes its summary with the memorization
evaluation. What each method does is tested in its own module, in process."""

from __future__ import annotations

import json

import pytest

from tests.test_simulation_digits import flwr_run

TINY = ("scenario='mnist-iid' num-clients=3 samples-per-client=60 test-samples-per-client=20 "
        "num-server-rounds=3 unlearn-rounds=1 model-width=8 forget-scope='client' "
        "forget-clients='1'")

#: Method -> (its run-config, the summary entries its run must show; None: any value).
METHODS: dict[str, tuple[str, dict[str, object]]] = {
    "federaser": ("federaser-interval=1",
                  {"retained_rounds": [1, 2, 3], "calibrated_rounds": [2, 3]}),
    "fedau": ("fedau-alpha=0.2", {"alpha": 0.2, "heads_from": [1], "client_epochs": 0}),
    "fedosd": ("fedosd-rounds=2", {"unlearning_rounds": 2, "post_training_rounds": 1}),
    "halimi": ("halimi-epochs=1", {"radius": None}),
    "liu": ("liu-exact-rounds=1", {"retraining_rounds": 3, "curvature_rounds": [2, 3]}),
    "fedrecovery": ("fedrecovery-sigma=0.001", {"sigma": 0.001, "client_epochs": 0}),
    "not": ("not-negated-layers=2", {"negated": None}),
}


@pytest.fixture(scope="module")
def every_baseline(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    options = " ".join(options for options, _ in METHODS.values())
    result = flwr_run(results, f"{TINY} strategy='{','.join(METHODS)}' {options}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return results


@pytest.mark.simulation
@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_baseline_runs_through_flwr_run(every_baseline, method) -> None:
    _, expected = METHODS[method]
    (folder,) = (every_baseline / "mnist-iid").glob(f"unlearn-{method}-*")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["strategy"] == method and "group_table" in summary
    # None: the entry must be there, its value is the method's own measurement.
    assert {key: summary[key] if expected[key] is not None else None
            for key in expected} == expected


@pytest.mark.simulation
def test_one_run_lists_each_method_in_the_run_store_index(every_baseline) -> None:
    # Each method of the list is a run of its own: one index entry per method, whose
    # config names that method alone; methods that need no training records share one
    # original.
    entries = [json.loads(p.read_text()) for p in (every_baseline / "index").glob("*.json")]
    assert sorted(e["config"]["strategy"] for e in entries) == sorted(METHODS)
    originals = {e["config"]["strategy"]: e["folders"]["train"] for e in entries}
    assert originals["not"] == originals["fedosd"] == originals["halimi"]
    assert originals["fedau"] != originals["not"]  # FedAU's heads: an original of its own
