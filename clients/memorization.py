"""Client work of FedMemEraser and its evaluation (seed 001).

Query actions served here (``query.<action>``; the message's ``config`` says which
of the client's samples are meant):

``mean_gradient``
    Gradient of the mean loss over the client's remaining training data at the
    received model (Alg. 1, step 3), or over its forget data D_u (``data = "forget"``,
    used by the Table F4 selection strategies). Replies with one array per model
    parameter and the sample count. Never samples.
``per_sample``
    The received model evaluated on each of the client's forget samples (D_u):
    true-label probability, correctness and loss per sample, with the samples'
    positions in the client's training split (the Grouped Memorization Evaluation).
``local_loss``
    Summed loss and count of the received model over the client's remaining
    training data (local fairness, seed 001 E.2).
``forget_gap``
    Accuracy of the received model on D_u and on the client's held-out test data
    re-weighted to D_u's class mix (two aggregates; FedMemEraser's ``rho-rule =
    "heldout"``).
``csl``
    The cumulative sample loss (CSL, seed 001 H.2) of the client's forget samples,
    accumulated during the original training (phase ``train``).

Which samples are "forget" samples is set by the message config's
:class:`fedunl_flwr.protocol.ForgetSelection` (the whole training split, some classes,
or sample positions). Remaining data is selected exactly as in training (its
:class:`fedunl_flwr.protocol.DataChange`, see ``BaseClient.training_set``).

CSL is a client-side training record (``fedunl_flwr.training_records``): the original
training's train messages name the phase folder (``records-to``), and every fit adds each
sample's loss at every local step to a per-sample sum in
``<results-dir>/<phase folder>/records/csl/client-<k>.npz`` (a file, since Ray may serve
a node's messages from different worker processes). Round 1 starts a fresh sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clients.handlers import (
    MIN_AGGREGATE_SAMPLES,
    QueryPolicy,
    check_sample_count,
    query_handler,
)
from clients.local_training import mean_loss_gradient
from clients.state import ClientState
from fedunl_flwr import protocol
from fedunl_flwr.metrics.evaluation import evaluate_model, per_sample_outputs
from fedunl_flwr.protocol import (
    CslReply,
    DataChange,
    ForgetGapReply,
    ForgetSelection,
    LocalLossReply,
    MeanGradientReply,
    PerSampleReply,
)
from fedunl_flwr.records import set_weights
from fedunl_flwr.training_records import (
    CSL_FOLDER,
    client_record_path,
    read_client_record,
    write_client_record,
)
from fedunl_flwr.unlearning.parameter_selection import class_weighted_accuracy


class MemorizationWork(ClientState):
    """Mixin for ``BaseClient``: mean gradients, per-sample evaluation, CSL."""

    # --- which samples --------------------------------------------------------------
    def forget_positions(self, config: dict) -> np.ndarray:
        """Sorted positions (in the training split) of the samples to forget."""
        size = len(self.y_train)
        selection = ForgetSelection.from_config(config)
        if selection.everything:
            return np.arange(size)
        chosen = np.zeros(size, dtype=bool)
        if selection.classes:
            chosen |= np.isin(self.y_train.numpy(), selection.classes)
        if selection.samples:
            ids = np.asarray(selection.samples, dtype=np.int64)
            bad = ids[(ids < 0) | (ids >= size)]
            if bad.size:
                raise ValueError(f"forget-samples {bad[:5].tolist()} outside 0..{size - 1} "
                                 f"(client {self.partition_id})")
            chosen[ids] = True
        return np.flatnonzero(chosen)

    def _forget_set(self, config: dict) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        positions = self.forget_positions(config)
        index = torch.as_tensor(positions, dtype=torch.long)
        return positions, self.x_train[index], self.y_train[index]

    # --- query actions --------------------------------------------------------------
    def query_mean_gradient(self, weights: list[np.ndarray] | None, config: dict
                            ) -> MeanGradientReply:
        """Mean-loss gradient over the remaining data (or D_u with ``data="forget"``)."""
        set_weights(self.model, _required(weights, "mean_gradient"))
        if config.get(protocol.DATA, "remaining") == protocol.FORGET:
            _, x, y = self._forget_set(config)
        else:
            x, y = self.training_set(config)
            _check_aggregate(len(y), "mean_gradient")
        if len(y):
            grads = mean_loss_gradient(self.model, x, y)
        else:
            grads = {n: torch.zeros_like(p) for n, p in self.model.named_parameters()}
        return MeanGradientReply(self.partition_id, len(y),
                                 {name: g.cpu().numpy() for name, g in grads.items()})

    def query_per_sample(self, weights: list[np.ndarray] | None, config: dict
                         ) -> PerSampleReply:
        """True-label probability, correctness, loss and entropies of each forget sample,
        or (``data`` = ``remaining``) of each remaining training sample, numbered in
        order."""
        set_weights(self.model, _required(weights, "per_sample"))
        if config.get(protocol.DATA, protocol.FORGET) == protocol.REMAINING:
            x, y = self.training_set(config)
            positions = np.arange(len(y))
        else:
            positions, x, y = self._forget_set(config)
        out = per_sample_outputs(self.model, x, y)

        def values(key: str) -> tuple[float, ...]:
            return tuple(out[key].astype(float).tolist())

        return PerSampleReply(self.partition_id, tuple(positions.astype(int).tolist()),
                              values("true_prob"), tuple(out["correct"].astype(int).tolist()),
                              values("loss"), values("entropy"), values("m_entropy"))

    def query_local_loss(self, weights: list[np.ndarray] | None, config: dict
                         ) -> LocalLossReply:
        """Loss of the model over the client's remaining training data."""
        set_weights(self.model, _required(weights, "local_loss"))
        x, y = self.training_set(config)
        _check_aggregate(len(y), "local_loss")
        result = evaluate_model(self.model, x, y, self.num_classes)
        return LocalLossReply(self.partition_id, result.loss_sum, result.num_examples)

    def query_forget_gap(self, weights: list[np.ndarray] | None, config: dict
                         ) -> ForgetGapReply:
        """Accuracy on D_u and on held-out test data of D_u's classes (class-weighted)."""
        set_weights(self.model, _required(weights, "forget_gap"))
        _, x, y = self._forget_set(config)
        check_sample_count("forget_gap", len(y), config)
        forget = evaluate_model(self.model, x, y, self.num_classes)
        heldout = evaluate_model(self.model, self.x_test, self.y_test, self.num_classes)
        accuracy, count = class_weighted_accuracy(heldout.class_correct.tolist(),
                                                  heldout.class_total.tolist(),
                                                  forget.class_total.tolist())
        return ForgetGapReply(self.partition_id, forget.accuracy, forget.num_examples,
                              accuracy, count)

    def query_csl(self, weights: list[np.ndarray] | None, config: dict) -> CslReply:
        """CSL of the forget samples (``csl-available`` 0 when it was not recorded)."""
        positions = self.forget_positions(config)
        folder = protocol.records_folder(config)
        state = self._read_csl(folder) if folder else None
        ids = tuple(positions.astype(int).tolist())
        if state is None:
            return CslReply(self.partition_id, False, ids, (), 0)
        sums, rounds = state
        return CslReply(self.partition_id, True, ids,
                        tuple(sums[positions].astype(float).tolist()), len(rounds))

    # --- CSL recording (hooks called by BaseClient.fit) --------------------------------
    def sample_loss_buffer(self, config: dict, size: int) -> np.ndarray | None:
        """Accumulate per-sample losses when the message asks for records, on the full split."""
        if protocol.records_folder(config) is None or size != len(self.y_train):
            return None
        if DataChange.from_config(config):
            return None
        return np.zeros(size, dtype=np.float64)

    def record_sample_losses(self, config: dict, losses: np.ndarray) -> None:
        """Add this round's per-sample losses to the stored CSL (round 1 starts afresh)."""
        folder = protocol.records_folder(config)
        assert folder is not None  # sample_loss_buffer returned a buffer
        server_round = int(config.get(protocol.SERVER_ROUND, 0))
        state = self._read_csl(folder)
        if state is None or server_round <= 1 or (state[1].size and state[1].max() >= server_round):
            sums, rounds = np.zeros_like(losses), np.zeros(0, dtype=np.int64)
        else:
            sums, rounds = state
        write_client_record(self._csl_path(folder), {
            "csl": sums + losses, "rounds": np.append(rounds, server_round)})

    def _csl_path(self, folder: str) -> Path:
        return client_record_path(self.config.resolved_results_dir(), folder, CSL_FOLDER,
                                  self.partition_id)

    def _read_csl(self, folder: str) -> tuple[np.ndarray, np.ndarray] | None:
        stored = read_client_record(self._csl_path(folder), ("csl", "rounds"))
        if stored is None or stored["csl"].shape != (len(self.y_train),):
            return None
        return stored["csl"], stored["rounds"]


def _over_forget_data(config: Mapping[str, Any]) -> bool:
    return config.get(protocol.DATA) == protocol.FORGET


EVALUATION_ONLY = QueryPolicy(evaluation_only=True)
query_handler(protocol.MEAN_GRADIENT, QueryPolicy(evaluation_only=True,
                                                  only_when=_over_forget_data)
              )(MemorizationWork.query_mean_gradient)
query_handler(protocol.PER_SAMPLE, EVALUATION_ONLY)(MemorizationWork.query_per_sample)
query_handler(protocol.LOCAL_LOSS)(MemorizationWork.query_local_loss)
query_handler(protocol.FORGET_GAP, QueryPolicy(forget_data=True)
              )(MemorizationWork.query_forget_gap)
query_handler(protocol.CSL, EVALUATION_ONLY)(MemorizationWork.query_csl)


def _required(weights: list[np.ndarray] | None, action: str) -> list[np.ndarray]:
    if weights is None:
        raise ValueError(f"query {action!r} needs the model in the message's 'arrays'")
    return weights


def _check_aggregate(count: int, action: str) -> None:
    """An aggregate over "the remaining data" must cover several samples (0 = none is
    fine: nothing is revealed); fewer would reveal single samples' labels."""
    if 0 < count < MIN_AGGREGATE_SAMPLES:
        raise PermissionError(f"query.{action} would cover only {count} sample(s); at least "
                              f"{MIN_AGGREGATE_SAMPLES} are needed so no single sample shows")
