"""Every seed 001 baseline through ``flwr run`` (SuperLink, Ray virtual clients) on a tiny
client-level request: each finishes and writes its summary with the memorization
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


@pytest.mark.simulation
@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_baseline_runs_through_flwr_run(tmp_path, method) -> None:
    options, expected = METHODS[method]
    result = flwr_run(tmp_path, f"{TINY} strategy='{method}' {options}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    (folder,) = (tmp_path / "mnist-iid").glob(f"unlearn-{method}-*")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["strategy"] == method and "group_table" in summary
    # None: the entry must be there, its value is the method's own measurement.
    assert {key: summary[key] if expected[key] is not None else None
            for key in expected} == expected
