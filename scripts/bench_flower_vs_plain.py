"""Benchmark: the same FedAvg work through a Flower/Ray simulation and a plain PyTorch loop.

Prints, measured in one run, the steady-state seconds per training round of both, the
seconds of one evaluation of every client by both (with ``--evaluate``), their ratios
and the peak resident memory of the process tree (driver + Ray workers), at each
client count. The Flower evaluation is the last round (all clients evaluate) less a
training round. Usage: ``python scripts/bench_flower_vs_plain.py [--clients 10 50]``;
the many-small-clients case of issue 25: ``--clients 1000 --scenario fashion-mnist-iid
--samples-per-client 60 --test-samples-per-client 100 --fraction-train 0.1 --evaluate``.
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
from fedunl_flwr.metrics.evaluation import evaluate_model
from fedunl_flwr.phases import model_for
from fedunl_flwr.seeding import numpy_generator, torch_generator


def plain_fedavg_times(overrides: dict, rounds: int) -> tuple[list[float], float]:
    """FedAvg in one process: each round the sampled clients (``fraction-train``) train in
    turn with the same local loop; then every client evaluates the model on its test
    split. The seconds of each round and of the evaluation."""
    config = load_run_config({}, overrides)
    scenario = get_scenario(config.scenario)
    fed = federated_data(config)
    data = [(images_to_tensor(c.x_train, scenario.in_channels), labels_to_tensor(c.y_train))
            for c in fed.clients]
    settings = TrainSettings(config.optimizer, config.learning_rate, config.local_epochs,
                             config.batch_size)
    global_model = model_for(config, fed.num_classes, 0)
    local = model_for(config, fed.num_classes)
    sampling = numpy_generator(config.seed, "sampling", "plain")
    count = max(1, round(config.fraction_train * len(data)))
    times = []
    for round_ in range(rounds):
        start = time.perf_counter()
        chosen = sorted(sampling.choice(len(data), count, replace=False).tolist())
        plain_fedavg_round(global_model, local, [data[c] for c in chosen], settings,
                           [torch_generator(config.seed, "data-order", c, "plain", round_)
                            for c in chosen], [len(data[c][1]) for c in chosen])
        times.append(time.perf_counter() - start)
    tests = [(images_to_tensor(c.x_test, scenario.in_channels), labels_to_tensor(c.y_test))
             for c in fed.clients]
    start = time.perf_counter()
    for x, y in tests:
        evaluate_model(global_model, x, y, fed.num_classes)
    return times, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scenario", default="mnist-iid")
    parser.add_argument("--samples-per-client", type=int, default=300)
    parser.add_argument("--test-samples-per-client", type=int, default=20)
    parser.add_argument("--fraction-train", type=float, default=1.0)
    parser.add_argument("--evaluate", action="store_true",
                        help="also time one evaluation of every client")
    parser.add_argument("--cpus-per-client", type=float, default=1.0)
    args = parser.parse_args()

    rows = []
    for clients in args.clients:
        results = tempfile.mkdtemp(prefix="fedunl-bench-")
        overrides = {"scenario": args.scenario, "num-clients": clients,
                     "samples-per-client": args.samples_per_client,
                     "test-samples-per-client": args.test_samples_per_client,
                     "fraction-train": args.fraction_train,
                     "num-server-rounds": args.rounds,
                     "evaluate-every": 10 * args.rounds, "results-dir": results}
        with PeakMemory() as flower_memory:
            paths = simulate(overrides, cpus_per_client=args.cpus_per_client)
        history = pd.read_csv(Path(paths["train"]) / "metrics.csv")
        # steady state: skip the first round (actor start-up) and the evaluated last one
        flower = statistics.median(history["seconds"].iloc[1:-1])
        flower_evaluation = float(history["seconds"].iloc[-1]) - flower
        # The plain loop at its best thread count (one thread per core, or one).
        plain, plain_evaluation, peak, per_threads = float("inf"), float("inf"), 0, {}
        for threads in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(threads)
            with PeakMemory() as plain_memory:
                times, evaluation = plain_fedavg_times(overrides, args.rounds)
            per_threads[threads] = round(statistics.median(times[1:]), 3)
            plain = min(plain, statistics.median(times[1:]))
            plain_evaluation = min(plain_evaluation, evaluation)
            peak = max(peak, plain_memory.peak)
        row = {"clients": clients, "flower s/round": round(flower, 3),
               "plain s/round": round(plain, 3),
               "plain s/round by threads": per_threads,
               "ratio flower/plain": round(flower / plain, 3)}
        if args.evaluate:
            row.update({"flower s/evaluation": round(flower_evaluation, 3),
                        "plain s/evaluation": round(plain_evaluation, 3),
                        "ratio (evaluation)": round(flower_evaluation / plain_evaluation, 3)})
        row.update({"flower peak RSS GiB": round(flower_memory.peak / 2**30, 2),
                    "plain peak RSS GiB": round(peak / 2**30, 2)})
        rows.append(row)
    print(f"\nscenario={args.scenario} samples/client={args.samples_per_client} "
          f"fraction-train={args.fraction_train:g} rounds={args.rounds} "
          f"cpus/client(flower)={args.cpus_per_client} machine cores={os.cpu_count()}; "
          f"plain = best of 1 and {os.cpu_count()} threads")
    print(pd.DataFrame(rows).to_markdown(index=False))
    print("goals (issue 25): a round <= 1.1x at 10 clients, <= 1.3x at 1,000 small "
          "clients; evaluating all 1,000 <= 2x")


if __name__ == "__main__":
    main()
