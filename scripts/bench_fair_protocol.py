"""Benchmark the fair protocol against the unfair one (every client retrains).

One invocation trains one original model on the offline digits scenario, then runs
Delete-Retrain under the fair protocol (only the requesting clients train; the others
contribute their cached final models) and under the unfair one (all clients
retrain, ``delete-retrain-all``), both for the same R rounds from the same model,
and prints what each cost: client-epochs, samples trained, local epochs done by
non-requesting clients, and the phase's wall time, with unfair/fair ratios.
``--editing`` adds the Neuron-Zeroing and FedCCCU routes (no training; their cost
is one query round).

Wall time is that of an in-process Flower simulation on this machine (clients share
its CPUs/GPU), including one evaluation of all clients after the last round.

    python scripts/bench_fair_protocol.py [--rounds 3] [--samples-per-client 600]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import bench_utils  # noqa: F401  (puts the project on sys.path)
import pandas as pd

from experiments.simulate import simulate
from fedunl_flwr.summaries import PhaseSummary


def measure(overrides: dict, strategies: list[str]) -> pd.DataFrame:
    rows = {}
    for strategy in strategies:
        paths = simulate({**overrides, "strategy": strategy})
        summary = PhaseSummary.load(paths["unlearn"] / "summary.json")
        if summary.request is None:
            raise RuntimeError(f"{strategy}: the unlearn summary has no request")
        requesting = set(summary.request.clients)
        by_client = summary.extra.get("client_epochs_by_client", {})
        rows[strategy] = {
            "clients trained": len(summary.extra.get("trained_clients", [])),
            "client-epochs": summary.client_epochs,
            "non-requesting client-epochs": sum(
                e for p, e in by_client.items() if int(p) not in requesting),
            "samples trained": int(summary.extra.get("samples_trained", 0)),
            "wall s": summary.seconds,
            "global acc %": 100 * summary.accuracy.global_accuracy,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    counts = ["clients trained", "client-epochs", "non-requesting client-epochs",
              "samples trained"]
    return table.astype({col: "int64" for col in counts})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="digits-real-noniid-offline")
    parser.add_argument("--samples-per-client", type=int, default=600)
    parser.add_argument("--train-rounds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="unlearn-rounds R")
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--forget-clients", default="0")
    parser.add_argument("--forget-classes", default="0")
    parser.add_argument("--editing", action="store_true",
                        help="also time neuron-zeroing and fedcccu")
    parser.add_argument("--results-dir", default="",
                        help="run store (default: a fresh temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    results_dir = args.results_dir or tempfile.mkdtemp(prefix="bench-fair-")
    overrides = {
        "scenario": args.scenario, "samples-per-client": args.samples_per_client,
        "test-samples-per-client": 100, "num-server-rounds": args.train_rounds,
        "local-epochs": args.local_epochs, "unlearn-rounds": args.rounds,
        "evaluate-every": max(1, args.rounds), "forget-scope": "class",
        "forget-clients": args.forget_clients, "forget-classes": args.forget_classes,
        "attribution-samples": 32, "results-dir": results_dir,
    }
    strategies = ["delete-retrain", "delete-retrain-all"]
    if args.editing:
        strategies += ["neuron-zeroing", "fedcccu"]
    table = measure(overrides, strategies)
    fair, unfair = table.loc["delete-retrain"], table.loc["delete-retrain-all"]
    ratio = {col: (unfair[col] / fair[col] if fair[col] else float("inf"))
             for col in ("clients trained", "client-epochs", "samples trained", "wall s")}
    print()
    print(f"Fair vs unfair unlearning protocol on {args.scenario}: request clients "
          f"{args.forget_clients} forget classes {args.forget_classes}; R = {args.rounds} "
          f"rounds x {args.local_epochs} local epoch(s); run store {results_dir}")
    shown = table.copy()
    for col in ("wall s", "global acc %"):
        shown[col] = shown[col].map(lambda v: f"{v:.2f}")
    shown = shown.astype(str)
    print(shown.to_markdown(colalign=("left",) + ("right",) * len(shown.columns)))
    print()
    print("unfair / fair: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items()))
    print(f"non-requesting clients' local epochs: fair "
          f"{int(fair['non-requesting client-epochs'])}, unfair "
          f"{int(unfair['non-requesting client-epochs'])}")


if __name__ == "__main__":
    main()
