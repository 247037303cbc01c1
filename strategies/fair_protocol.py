"""Retraining routes of seed 000: the fair protocol and the unfair (all clients) contrast.

Fair protocol: for R rounds only the requesting clients train, from the current
global model, on their data without (or with relabelled) forget-class samples;
every other client "retains its pretrained global model" (seed 000 Table 4): its
contribution is the original global model (``fair-others = "global"``, the default)
or, as an option, its cached final local model of the original run
(``fair-others = "cached"``). The server averages all of them weighted by sample
count (FedAvg):

    w_next = (sum_{k requesting} n'_k w_k + sum_{k other} n_k w_k^orig)
             / (sum n'_k + sum n_k)

with ``n'_k`` the samples a requesting client trained on this round, ``n_k`` the
other clients' training-set sizes and ``w_k^orig`` the original global model (or the
client's cached local model).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fedunl_flwr.config import ConfigError, RunConfig
from fedunl_flwr.fedavg_train import FedAvgTrain
from fedunl_flwr.federation import Federation, raise_on_errors
from fedunl_flwr.methods import Option
from fedunl_flwr.phases import TrainedModel
from fedunl_flwr.protocol import DataChange, TrainReply
from strategies.unlearning import (
    UnlearningMethod,
    UnlearningOutcome,
    UnlearningRequest,
    UnlearningRun,
    unlearn_config,
)
from strategies.verification import verification_summary


def cached_models(original: TrainedModel, partition_ids: Iterable[int]) -> dict[int, ArrayRecord]:
    """The original run's final local model of each client; a clear error if one is missing."""
    partition_ids = sorted(partition_ids)
    missing = [p for p in partition_ids if p not in original.client_arrays]
    if missing:
        raise ConfigError(
            f"this method needs the final local model of client(s) {missing} from the "
            f"original run, but {original.store.path} has none for them "
            "(a client never sampled while training, e.g. fraction-train < 1). Retrain the "
            "original model with fraction-train = 1 (another results-dir or config).")
    return {p: original.client_arrays[p] for p in partition_ids}


#: What every non-requesting client contributes under the fair protocol.
FAIR_OTHERS = Option(
    "fair-others", "global",
    "fair protocol: what every non-requesting client contributes: `global` (the pretrained "
    "global model, seed 000 Table 4) or `cached` (its final local model of the original run)",
    lambda value: value in ("global", "cached"), "must be 'global' or 'cached'")


class WeightedSum:
    """Running ``sum_k n_k * w_k`` (float64) of named arrays, for a fixed part of FedAvg."""

    def __init__(self) -> None:
        self.total: dict[str, np.ndarray] = {}
        self.weight = 0.0
        self.dtypes: dict[str, np.dtype] = {}

    def add(self, arrays: ArrayRecord, weight: float) -> None:
        for key, array in arrays.items():
            value = array.numpy()
            self.dtypes.setdefault(key, value.dtype)
            scaled = value.astype(np.float64) * float(weight)
            self.total[key] = self.total[key] + scaled if key in self.total else scaled
        self.weight += float(weight)

    def average_with(self, average: ArrayRecord | None, weight: float) -> ArrayRecord:
        """``(weight * average + sum) / (weight + sum of weights)``.

        ``average`` is the (already weighted) FedAvg of the trained clients, whose
        sample counts add up to ``weight``; None or ``weight == 0`` leaves the sum's
        own average.
        """
        total_weight = self.weight + (float(weight) if average is not None else 0.0)
        if total_weight <= 0:
            raise ValueError("nothing to average: every contribution has zero samples")
        out = {}
        for key, value in self.total.items():
            combined = value.copy()
            if average is not None and weight > 0:
                combined += average[key].numpy().astype(np.float64) * float(weight)
            out[key] = Array(np.ascontiguousarray(
                (combined / total_weight).astype(self.dtypes[key])))
        return ArrayRecord(out)


class FairRetrainFedAvg(FedAvgTrain):
    """R FedAvg rounds from the original global model in which the requesting clients
    train without (``relabel=False``) or with relabelled (``relabel=True``) forget-class
    samples, sent as a :class:`fedunl_flwr.protocol.DataChange`.

    ``fair=True`` (the fair protocol): only they train and every other client's
    contribution is the cached term described in the module docstring. ``fair=False``:
    every client trains, only the requesting ones with the change.
    """

    def __init__(self, run: UnlearningRun, name: str, fair: bool, relabel: bool) -> None:
        self.fair = fair
        self.request: UnlearningRequest = run.request
        self.requesting = sorted(run.request.clients)
        participants = self.requesting if self.fair else run.federation.partition_ids
        super().__init__(run.federation, participants, run.config.unlearn_rounds,
                         fraction_train=1.0, evaluate_every=run.config.evaluate_every,
                         fraction_evaluate=run.config.fraction_evaluate,
                         seed=run.config.seed, phase=f"unlearn-{name}",
                         target_error=run.config.target_error)
        classes = run.request.classes
        self.removal = (DataChange(relabel_classes=classes) if relabel
                        else DataChange(exclude_classes=classes)).encode()
        self.cached = WeightedSum()
        self.cached_clients: list[int] = []
        self.others = run.config.option(FAIR_OTHERS.key)
        if self.fair:
            others = [p for p in run.federation.partition_ids if p not in self.requesting]
            if self.others == "cached":
                for pid, arrays in cached_models(run.original, others).items():
                    self.cached.add(arrays, run.federation.clients[pid].num_train)
            else:  # the same global model for every other client: one weighted term
                self.cached.add(run.original.arrays,
                                sum(run.federation.clients[p].num_train for p in others))
            self.cached_clients = others
        self.epochs_by_client: dict[int, int] = {p: 0 for p in run.federation.partition_ids}
        self.samples_trained = 0

    # --- Flower Strategy hooks ------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Fair protocol: every participant requests, so one config tells all to remove."""
        if self.fair:
            config = ConfigRecord({**dict(config), **self.removal})
        return super().configure_train(server_round, arrays, config, grid)

    def train_messages(self, partition_ids: list[int], arrays: ArrayRecord,
                       config: ConfigRecord) -> list[Message]:
        """Unfair variant: only requesting clients get the removal setting."""
        if self.fair:
            return super().train_messages(partition_ids, arrays, config)
        requesting = [p for p in partition_ids if p in self.requesting]
        others = [p for p in partition_ids if p not in self.requesting]
        removing = ConfigRecord({**dict(config), **self.removal})
        messages = super().train_messages(requesting, arrays, removing) if requesting else []
        if others:
            messages += super().train_messages(others, arrays, config)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg of the trained models, plus (fair protocol) the cached ones."""
        replies = list(replies)
        raise_on_errors(replies, f"{self.phase} round {server_round}", self.expected_train,
                        self.federation)
        trained, trained_weight = [], 0
        for reply in replies:
            train_reply = TrainReply.from_content(reply.content)
            if train_reply.num_examples > 0:  # a client left with no sample trains nothing
                trained.append(reply)
                pid = self.federation.partition_of(reply, train_reply.partition_id)
                self.epochs_by_client[pid] += train_reply.local_epochs
                self.samples_trained += train_reply.num_examples * train_reply.local_epochs
                trained_weight += train_reply.num_examples
        arrays, metrics = super().aggregate_train(server_round, trained)
        if not self.fair:
            return arrays, metrics
        return self.cached.average_with(arrays, trained_weight), metrics



class RetrainRoute(UnlearningMethod):
    """Base of the retraining routes: R rounds of :class:`FairRetrainFedAvg`.

    Subclasses set ``fair`` and ``relabel`` (what a requesting client does with its
    forget-class samples: False deletes them, True relabels them).
    """

    scopes: ClassVar[tuple[str, ...]] = ("class",)
    evaluations = (verification_summary,)
    fair: ClassVar[bool] = True
    relabel: ClassVar[bool] = False

    def check_stored(self, config: RunConfig, request: UnlearningRequest,
                     federation: Federation, original: TrainedModel) -> None:
        """The cached client models exist (checked before the phase folder is created)."""
        if self.fair and config.option(FAIR_OTHERS.key) == "cached":
            cached_models(original, [p for p in federation.partition_ids
                                     if p not in request.clients])

    def unlearn(self, grid: Grid, run: UnlearningRun) -> UnlearningOutcome:
        """R rounds from the original global model (R = 0 keeps it)."""
        strategy = FairRetrainFedAvg(run, self.name, self.fair, self.relabel)
        arrays = run.original.arrays
        if run.config.unlearn_rounds > 0:
            result = strategy.start(grid, run.original.arrays,
                                    num_rounds=run.config.unlearn_rounds,
                                    train_config=unlearn_config(run.config, strategy.phase))
            arrays = result.arrays
        trained = sorted(p for p, e in strategy.epochs_by_client.items() if e > 0)
        return UnlearningOutcome(arrays, strategy.history_rows(), strategy.client_epochs, {
            "protocol": "fair" if self.fair else "all-clients",
            "others_contribute": (("the original global model" if strategy.others == "global"
                                   else "their cached final local models")
                                  if self.fair else "their own retraining"),
            "trained_clients": trained,
            "cached_clients": strategy.cached_clients,
            "client_epochs_by_client": {str(p): e for p, e in
                                        sorted(strategy.epochs_by_client.items())},
            "samples_trained": strategy.samples_trained,
            "converged_round": strategy.converged_round,
            "unlearn_rounds": run.config.unlearn_rounds,
        })
