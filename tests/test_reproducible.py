"""Identical configurations give identical results (replies are aggregated in
partition-id order; every random stream is derived from the seed), whichever engine
delivers the messages: Ray's virtual clients in their worker processes, in any
scheduling order, or the in-process grid, given the same number of torch threads (a
Ray virtual client with one CPU computes with one thread; another thread count sums in
another order and changes the last bits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.simulation
def test_same_config_twice_gives_the_same_models_and_summary(tmp_path, data_dir) -> None:
    """Once through Ray (one CPU, so one torch thread, per virtual client, unless
    OMP_NUM_THREADS says otherwise) in a process whose HOME must stay empty, once in
    process with as many torch threads: the same bits."""
    import torch

    from experiments.simulate import simulate

    base = {"scenario": "fashion-mnist-dir0.5", "num-clients": 4, "samples-per-client": 100,
            "test-samples-per-client": 30, "num-server-rounds": 2, "model": "cnn",
            "model-width": 8, "aggregation": "mean", "strategy": "fedmemeraser",
            "forget-scope": "client", "forget-clients": "1", "unlearn-rounds": 2,
            "data-dir": str(data_dir)}
    # The Ray half runs in a process of its own with an empty HOME: Flower would create
    # ~/.flwr/source; the suite's environment (conftest) points FLWR_HOME elsewhere, and
    # the app keeps everything under results-dir, so nothing may appear there.
    home = tmp_path / "home"
    home.mkdir()
    script = ("import json\nfrom experiments.simulate import simulate\n"
              f"paths = simulate({{**{base!r}, 'results-dir': {str(tmp_path / 'a')!r}}}, "
              "cpus_per_client=1.0)\n"
              "print(json.dumps({k: str(v) for k, v in paths.items()}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "HOME": str(home)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(home.rglob("*")), sorted(map(str, home.rglob("*")))
    first = {k: Path(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    threads = torch.get_num_threads()
    # Ray's workers compute with OMP_NUM_THREADS threads when it is set (the suite's
    # workers set it), else with their CPU count, 1: the in-process half does the same.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        # Each message computes with the threads a one-CPU Ray client would (threads.py).
        second = simulate({**base, "results-dir": str(tmp_path / "b")}, engine="inprocess",
                          cpus_per_client=1.0)
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
