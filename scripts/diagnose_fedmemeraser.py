"""Diagnose FedMemEraser on a stored request: rho sweep, reset per tensor, per-round trajectory.

Takes a completed ``unlearn-finetune-*`` or ``unlearn-fedmemeraser-*`` folder (its
``config.json`` and ``du_samples.csv`` fix the scenario, the request, the original model
and the memorization groups) and re-runs the authors' procedure in this process for each
rho: one FedAvg round of the remaining clients from the original model, reset of the rho
fraction of entries with the smallest |mean update| (``reset-tensors``, ``model-init`` of
the folder's config), then ``unlearn-rounds - 1`` fine-tuning rounds. It prints, per rho,
the share of each tensor that was reset and the accuracy on every memorization group, on
D_u and on the real test set right after the reset and after every round, next to the
original and the retrained models' accuracies. No Flower, no Ray: a plain PyTorch loop
over the same pure functions (selection, re-initialisation, local training).

Usage::

    python scripts/diagnose_fedmemeraser.py RESULTS/<scenario>/unlearn-finetune-<hash> \\
        [--rho 0 0.2 0.4 0.6 0.8] [--rounds R] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import bench_utils  # noqa: F401  (puts the project on sys.path)
import numpy as np
import pandas as pd
import torch
from bench_utils import plain_fedavg_round

from clients.local_training import TrainSettings, mean_loss_gradient
from fedunl_flwr.config import RunConfig, key_values
from fedunl_flwr.data.scenarios import federated_data, get_scenario, scenario_test_sets
from fedunl_flwr.data.tensors import images_to_tensor, labels_to_tensor
from fedunl_flwr.federation import data_fingerprint, with_data
from fedunl_flwr.metrics.evaluation import evaluate_model, per_sample_outputs
from fedunl_flwr.metrics.memorization import MEMORIZATION_GROUP_LABELS, group_accuracies
from fedunl_flwr.phases import model_for
from fedunl_flwr.seeding import torch_generator
from fedunl_flwr.store import RunStore
from fedunl_flwr.summaries import MemorizationEvaluation, from_json
from fedunl_flwr.unlearning.parameter_selection import (
    adaptive_rho,
    reinitialize_parameters,
    select_redundant_parameters,
)


def folder_config(folder: Path, results: Path) -> RunConfig:
    values = key_values(json.loads((folder / "config.json").read_text()))
    values["results_dir"] = str(results)
    return RunConfig.from_mapping({k.replace("_", "-"): v for k, v in values.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rho", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8])
    parser.add_argument("--rounds", type=int, default=0, help="0 = the folder's unlearn-rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--statistic", choices=["update", "gradient"], default="update",
                        help="update: the first round's mean update, reset after it "
                             "(authors' code); gradient: mean gradient at the original "
                             "model, reset before fine-tuning (the paper's text)")
    parser.add_argument("--reset-tensors", choices=["all", "weights"], default=None,
                        help="default: the folder's reset-tensors")
    parser.add_argument("--reset-scheme", default=None,
                        help="init scheme the reset draws from (default: the model's own "
                             "model-init; another one reproduces a reset/init mismatch)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    folder = args.folder.resolve()
    config = folder_config(folder, folder.parents[1])
    rounds = args.rounds or config.unlearn_rounds
    scenario = get_scenario(config.scenario)
    fed = federated_data(config)
    channels = scenario.in_channels
    leaving = {int(c) for c in config.forget_clients.split(",") if c.strip()}
    if config.forget_scope != "client":
        raise SystemExit("this diagnosis handles client-level requests")
    remaining = [c for c in fed.clients if c.partition_id not in leaving]
    data = [(images_to_tensor(c.x_train, channels), labels_to_tensor(c.y_train))
            for c in remaining]
    weights = [len(y) if config.aggregation == "weighted" else 1.0 for _, y in data]

    samples = pd.read_csv(folder / "du_samples.csv")
    groups = np.array([MEMORIZATION_GROUP_LABELS.index(g) if g in MEMORIZATION_GROUP_LABELS
                       else -1 for g in samples["group"]])
    du_x = torch.cat([images_to_tensor(fed.clients[int(c)].x_train[[int(p)]], channels)
                      for c, p in zip(samples["client"], samples["position"], strict=True)])
    du_y = torch.tensor([int(fed.clients[int(c)].y_train[int(p)])
                         for c, p in zip(samples["client"], samples["position"], strict=True)])
    tests = [(images_to_tensor(x, channels), labels_to_tensor(y))
             for _, x, y in scenario_test_sets(config.scenario, str(config.resolved_data_dir()))]

    def row(model, label: str) -> dict:
        correct = per_sample_outputs(model, du_x, du_y)["correct"].astype(bool)
        test = [evaluate_model(model, x, y, fed.num_classes) for x, y in tests]
        accuracy = sum(int(r.class_correct.sum()) for r in test) / sum(r.num_examples for r in test)
        return {"model": label, **dict(zip(MEMORIZATION_GROUP_LABELS,
                                           100 * group_accuracies(correct, groups), strict=True)),
                "D_u": 100 * correct.mean(), "test": 100 * accuracy}

    store = RunStore(config.resolved_results_dir())
    fingerprint = data_fingerprint({c.partition_id: c.fingerprint for c in fed.clients})
    train = store.phase(config.scenario, "train",
                        with_data(config.training_key(), fingerprint)).path
    original_state = {k: torch.from_numpy(v) for k, v in np.load(train / "global.npz").items()}
    evaluation = from_json(MemorizationEvaluation,
                           json.loads((folder / "summary.json").read_text()))
    retrained = evaluation.memorization.group_accuracy.retrained
    settings = TrainSettings(config.optimizer, config.learning_rate,
                             config.unlearn_local_epochs or config.local_epochs,
                             config.batch_size, config.augment)
    model, local = model_for(config, fed.num_classes), model_for(config, fed.num_classes)
    model.load_state_dict(original_state)
    rows = [row(model, "original")]
    rows += [{"model": f"retrained {j}",
              **dict(zip([*MEMORIZATION_GROUP_LABELS, "D_u"], r, strict=False))}
             for j, r in enumerate(retrained)]
    include_1d = (args.reset_tensors or config.option("reset-tensors")) == "all"
    scheme = args.reset_scheme or config.model_init

    def reset(statistic: dict) -> None:
        state = model.state_dict()
        masks = select_redundant_parameters(statistic, rho, include_1d=include_1d)
        adaptive, threshold = adaptive_rho(statistic, include_1d=include_1d)
        print(f"App. H.3 adaptive rho of this statistic: {adaptive:.3f} (|stat| < "
              f"{threshold:.0e})", flush=True)
        model.load_state_dict(reinitialize_parameters(
            state, masks, torch_generator(config.seed, "reset"), scheme))
        shares = {k: round(float(m.float().mean()), 3) for k, m in masks.items()}
        print(f"rho {rho:g}: share of each tensor reset: {shares}", flush=True)
        rows.append(row(model, f"rho {rho:g} after reset"))

    for rho in args.rho:
        model.load_state_dict(original_state)
        if args.statistic == "gradient" and rho > 0:
            grads = [mean_loss_gradient(model, x, y) for x, y in data]
            reset({k: sum(g[k] for g in grads) / len(grads) for k in grads[0]})
        for round_ in range(1, rounds + 1):
            plain_fedavg_round(model, local, data, settings,
                               [torch_generator(config.seed, "data-order", c.partition_id,
                                                "diagnose", round_) for c in remaining],
                               weights)
            if round_ == 1 and rho > 0 and args.statistic == "update":
                after = model.state_dict()
                reset({k: after[k] - original_state[k] for k in after})
            rows.append(row(model, f"rho {rho:g} round {round_}"))
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=False,
                                                    float_format="%.1f"), flush=True)
    print(f"\n{config.scenario}, leaving {sorted(leaving)}, model-init {config.model_init}, "
          f"aggregation {config.aggregation}, statistic {args.statistic}, reset-tensors "
          f"{'all' if include_1d else 'weights'}, reset scheme {scheme}, "
          f"group sizes {evaluation.memorization.group_sizes}")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f"))


if __name__ == "__main__":
    main()
