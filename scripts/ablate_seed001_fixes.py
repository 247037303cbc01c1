"""How much each seed 001 evaluation fix moves the top-group Delta (issue 7, part 1).

Runs one client-level request (default: MNIST Dirichlet(0.3), client 6 leaves, the
authors' setting: GroupNorm, their init, unweighted mean, update statistic, J = 2 scoring
+ 2 held-out retrained models) with fine-tuning and FedMemEraser, then once per fix with
that one fix undone, and prints the top memorization group's |Delta| to the held-out
retrained models, the retrain-vs-retrain noise floor and the real-test accuracy.

Undone by run-config: ``model-norm=batch`` (c), ``aggregation=weighted`` (d),
``model-init=pytorch`` (b: the models' and the reset's scheme), and the two readings that
make FedMemEraser forget (``gradient-source=gradient``, ``reset-tensors=weights``).
Undone in this process only, by patching the server-side stream (the ServerApp runs in
this process; each such variant uses its own results folder): (a) retrained model 0
starts from the original's initial weights; (b) the reset draws from the original's
initialisation stream, so a reset entry returns to its initial value. Re-scored from the
base run's per-sample file: (h) in-sample scoring (the unlearned model compared with the
retrained models that scored the groups) and (g) groups over the raw, unclipped scores.
(e) time-to-peak, (f) test set, (i) fairness and (j) F4 do not enter Delta.

Usage::

    FEDUNL_DATA_DIR=... python scripts/ablate_seed001_fixes.py --results-dir DIR
        [--set key=value ...] [--only base,norm,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import bench_utils  # noqa: F401  (puts the project on sys.path)
import numpy as np
import pandas as pd

from experiments.run import parse_sets
from experiments.simulate import simulate
from fedunl_flwr import phases
from fedunl_flwr.metrics.memorization import assign_memorization_groups
from strategies import fedmemeraser

BASE: dict[str, Any] = {
    "scenario": "mnist-dir0.3", "forget-scope": "client", "forget-clients": "6",
    "model": "cnn", "model-norm": "group", "model-init": "kaiming-relu",
    "aggregation": "mean", "heldout-retrains": True, "retrain-seeds": 2,
    "gradient-source": "update", "reset-tensors": "all", "rho": 0.6,
}
#: name -> (what is undone, run-config changes, patch applied in this process)
VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "base": ("nothing (every fix in)", {}, ""),
    "shared-init": ("(a) retrained model 0 starts from the original's init", {}, "init"),
    "reset-from-init": ("(b) reset drawn from the original's init stream", {}, "reset"),
    "pytorch-init": ("(b) PyTorch default init for the models and the reset",
                     {"model-init": "pytorch"}, ""),
    "batch-norm": ("(c) BatchNorm instead of GroupNorm", {"model-norm": "batch"}, ""),
    "weighted": ("(d) sample-weighted mean (seed 000's eq. 1)", {"aggregation": "weighted"}, ""),
    "gradient": ("paper text: fresh gradient statistic, reset before fine-tuning",
                 {"gradient-source": "gradient"}, ""),
    "weights-only": ("reset conv/linear weights only", {"reset-tensors": "weights"}, ""),
}


def _patch(kind: str) -> None:
    """Undo fix (a) or (b) in this process (the ServerApp's thread draws both)."""
    if kind == "init":
        original = phases.stream_seed

        def shared(seed: int, purpose: str, *index: int | str) -> int:
            if purpose == "init" and index == (1,):
                index = (0,)
            return original(seed, purpose, *index)

        phases.stream_seed = shared
    elif kind == "reset":
        draw = fedmemeraser.torch_generator
        fedmemeraser.torch_generator = lambda seed, purpose, *index: (
            draw(seed, "init", 0) if purpose == "reset" else draw(seed, purpose, *index))


def top_delta(summary: dict) -> dict[str, float]:
    """Top group |Delta|, its floor and size, D_u and test accuracy of one run."""
    mem = summary["memorization"]
    unlearned = mem["group_accuracy"]["unlearned"][0]
    retrained = float(np.mean([row[0] for row in mem["group_accuracy"]["retrained"]]))
    return {"delta": abs(unlearned - retrained),
            "floor": mem["retrain_noise_floor"]["delta"][0],
            "size": mem["group_sizes"][0],
            "unlearned": unlearned, "retrained": retrained,
            "test": summary["test_accuracy"]["unlearned"]}


def rescored(folder: Path, summary: dict) -> dict[str, float]:
    """(h) and (g) on the run's per-sample file: Delta without the held-out reference,
    and with groups over the raw scores."""
    samples = pd.read_csv(folder / "du_samples.csv")
    mem = summary["memorization"]
    scoring = [f"correct_retrained_{j}" for j in mem["scoring_retrains"]]
    reference = [f"correct_retrained_{j}" for j in mem["reference_retrains"]]
    top = assign_memorization_groups(samples["mem_score"].to_numpy()) == 0
    raw = samples["mem_score"].to_numpy()
    raw_top = raw > np.percentile(raw, 95)

    def delta(mask: np.ndarray, columns: list[str]) -> float:
        unlearned = samples.loc[mask, "correct_unlearned"].mean() * 100
        return abs(unlearned - samples.loc[mask, columns].mean(axis=0).mean() * 100)

    return {"in_sample": delta(top, scoring), "heldout": delta(top, reference),
            "unclipped": delta(raw_top, reference), "unclipped_size": int(raw_top.sum())}


def run_variant(name: str, results: Path, sets: dict[str, Any]) -> dict[str, Any]:
    what, changes, patch = VARIANTS[name]
    folder = results / (name if patch else "shared")
    rows = {}
    for strategy in ("finetune", "fedmemeraser"):
        overrides = {**BASE, **changes, **sets, "strategy": strategy,
                     "results-dir": str(folder)}
        start = time.perf_counter()
        paths = simulate(overrides)
        summary = json.loads((paths["unlearn"] / "summary.json").read_text())
        rows[strategy] = {**top_delta(summary), "seconds": time.perf_counter() - start,
                          "folder": str(paths["unlearn"])}
        if name == "base":
            rows[strategy]["rescored"] = rescored(paths["unlearn"], summary)
    return {"variant": name, "undone": what, **rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", type=Path, required=True)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--only", default=",".join(VARIANTS),
                        help="comma-separated variants (default: all)")
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    patched = [n for n in names if VARIANTS[n][2]]
    if len(patched) > 1:
        parser.error(f"run the patched variants {patched} in separate processes")
    out = args.results_dir / "ablation.jsonl"
    for name in names:
        _patch(VARIANTS[name][2])
        row = run_variant(name, args.results_dir, parse_sets(args.sets))
        with out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        ft, fme = row["finetune"], row["fedmemeraser"]
        print(f"ABLATION {name:16s} FT {ft['delta']:5.1f} | FME {fme['delta']:5.1f} | floor "
              f"{fme['floor']:5.1f} (n={fme['size']}) | test FT {ft['test']:.1f} FME "
              f"{fme['test']:.1f} | {row['undone']}", flush=True)
        if "rescored" in fme:
            rescored = {s: row[s]["rescored"] for s in row if s in ("finetune", "fedmemeraser")}
            print(f"ABLATION rescored: {json.dumps(rescored)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
