"""Identical configurations give identical results (replies are aggregated in
partition-id order; every random stream is derived from the seed), whichever engine
delivers the messages: Ray's virtual clients in their worker processes, in any
scheduling order, or the in-process grid, given the same number of torch threads (a
Ray virtual client with one CPU computes with one thread; another thread count sums in
another order and changes the last bits)."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.simulation
def test_same_config_twice_gives_the_same_models_and_summary(tmp_path, data_dir) -> None:
    """Once through Ray (one CPU, so one torch thread, per virtual client), once in
    process with one torch thread: the same bits."""
    import torch

    from experiments.simulate import simulate

    base = {"scenario": "fashion-mnist-dir0.5", "num-clients": 4, "samples-per-client": 100,
            "test-samples-per-client": 30, "num-server-rounds": 2, "model": "cnn",
            "model-width": 8, "aggregation": "mean", "strategy": "fedmemeraser",
            "forget-scope": "client", "forget-clients": "1", "unlearn-rounds": 2,
            "data-dir": str(data_dir)}
    first = simulate({**base, "results-dir": str(tmp_path / "a")}, cpus_per_client=1.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        second = simulate({**base, "results-dir": str(tmp_path / "b")}, engine="inprocess")
    finally:
        torch.set_num_threads(threads)
    for phase in ("train", "unlearn"):
        with np.load(first[phase] / "global.npz") as a, np.load(second[phase] / "global.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for name in a.files:
                np.testing.assert_array_equal(a[name], b[name])
    summaries = [json.loads((p["unlearn"] / "summary.json").read_text()) for p in (first, second)]
    for key in ("group_table", "du_accuracy", "test_accuracy", "reset", "per_client_accuracy"):
        assert summaries[0][key] == summaries[1][key], key
