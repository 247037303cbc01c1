"""Benchmark: the same FedAvg work through a Flower/Ray simulation and a plain PyTorch loop.

Prints, measured in one run, the steady-state seconds per round of both, their ratio
and the peak resident memory of the process tree (driver + Ray workers), at each
client count. Usage: ``python scripts/bench_flower_vs_plain.py [--clients 10 50]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import bench_utils  # noqa: F401  (puts the project on sys.path)
import pandas as pd
import torch
from bench_utils import PeakMemory, plain_fedavg_round

from clients.local_training import TrainSettings
from experiments.simulate import simulate
from fedunl_flwr.client_app import load_run_config
from fedunl_flwr.data.scenarios import federated_data, get_scenario
from fedunl_flwr.data.tensors import images_to_tensor, labels_to_tensor
from fedunl_flwr.phases import model_for
from fedunl_flwr.seeding import torch_generator


def plain_fedavg_round_times(overrides: dict, rounds: int) -> list[float]:
    """FedAvg in one process: every client trains in turn with the same local loop."""
    config = load_run_config({}, overrides)
    scenario = get_scenario(config.scenario)
    fed = federated_data(config)
    data = [(images_to_tensor(c.x_train, scenario.in_channels), labels_to_tensor(c.y_train))
            for c in fed.clients]
    settings = TrainSettings(config.optimizer, config.learning_rate, config.local_epochs,
                             config.batch_size)
    global_model = model_for(config, fed.num_classes, 0)
    local = model_for(config, fed.num_classes)
    times = []
    for round_ in range(rounds):
        start = time.perf_counter()
        plain_fedavg_round(global_model, local, data, settings,
                           [torch_generator(config.seed, "data-order", c, "plain", round_)
                            for c in range(len(data))], [len(y) for _, y in data])
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scenario", default="mnist-iid")
    parser.add_argument("--samples-per-client", type=int, default=300)
    parser.add_argument("--cpus-per-client", type=float, default=1.0)
    args = parser.parse_args()

    rows = []
    for clients in args.clients:
        results = tempfile.mkdtemp(prefix="fedunl-bench-")
        overrides = {"scenario": args.scenario, "num-clients": clients,
                     "samples-per-client": args.samples_per_client,
                     "test-samples-per-client": 20, "num-server-rounds": args.rounds,
                     "evaluate-every": 10 * args.rounds, "results-dir": results}
        with PeakMemory() as flower_memory:
            paths = simulate(overrides, cpus_per_client=args.cpus_per_client)
        history = pd.read_csv(Path(paths["train"]) / "metrics.csv")
        # steady state: skip the first round (actor start-up) and the evaluated last one
        flower = statistics.median(history["seconds"].iloc[1:-1])
        # The plain loop at its best thread count (one thread per core, or one).
        plain, peak = float("inf"), 0
        for threads in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(threads)
            with PeakMemory() as plain_memory:
                plain = min(plain, statistics.median(
                    plain_fedavg_round_times(overrides, args.rounds)[1:]))
            peak = max(peak, plain_memory.peak)
        rows.append({"clients": clients, "flower s/round": round(flower, 3),
                     "plain s/round": round(plain, 3),
                     "ratio flower/plain": round(flower / plain, 3),
                     "flower peak RSS GiB": round(flower_memory.peak / 2**30, 2),
                     "plain peak RSS GiB": round(peak / 2**30, 2)})
    print(f"\nscenario={args.scenario} samples/client={args.samples_per_client} "
          f"rounds={args.rounds} cpus/client(flower)={args.cpus_per_client} "
          f"machine cores={os.cpu_count()}; plain = best of 1 and {os.cpu_count()} threads")
    print(pd.DataFrame(rows).to_markdown(index=False))
    print("goal: ratio <= 1.2 at 10 clients; 50 virtual clients fit in memory")


if __name__ == "__main__":
    main()
