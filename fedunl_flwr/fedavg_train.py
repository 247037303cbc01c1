"""FedAvg over a chosen set of clients, with per-round progress and kept client models."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords
from flwr.supercore import log

from fedunl_flwr import protocol
from fedunl_flwr.aggregation import fedavg_mean
from fedunl_flwr.federation import (
    Federation,
    evaluation_key,
    evaluations_in,
    format_eta,
    raise_on_errors,
)
from fedunl_flwr.protocol import TrainReply
from fedunl_flwr.records import from_record, scalar, to_record
from fedunl_flwr.seeding import numpy_generator
from fedunl_flwr.training_records import RoundRecorder

#: Aggregation name -> a client's weight from its train reply.
AGGREGATION_WEIGHTS: dict[str, Callable[[TrainReply], float]] = {
    "weighted": lambda reply: float(reply.num_examples),
    "mean": lambda reply: 1.0,
}


@dataclass
class RoundRecord:
    """One round's progress (``accuracy`` is NaN when the round was not evaluated)."""

    round: int
    seconds: float
    elapsed: float
    train_loss: float
    accuracy: float
    clients_trained: int


#: A mean cross-entropy above this is a diverged run (the loss of a uniform guess is
#: ln(classes), a few units).
DIVERGED_LOSS = 1e6


class TrainingDiverged(RuntimeError):
    """A client's training produced a non-finite model or an exploding loss."""


def check_not_diverged(loss: float, arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Raise :class:`TrainingDiverged` for a non-finite or exploding train loss, or a
    model with non-finite entries: such a phase must not be stored as complete."""
    bad = [name for name, array in arrays.items() if not np.isfinite(array).all()]
    if not math.isfinite(loss) or loss > DIVERGED_LOSS or bad:
        raise TrainingDiverged(
            f"{where}: the training diverged (train loss {loss:.3g}"
            f"{', non-finite ' + ', '.join(bad[:3]) if bad else ''}); lower learning-rate. "
            "The phase is not stored as complete.")


class FedAvgTrain(FedAvg):
    """FedAvg whose participants are partition ids (e.g. only the remaining clients).

    Every sampled participant trains from the global model; the server averages the
    returned models weighted by sample count. All clients evaluate the global model
    on their test split every ``evaluate_every`` rounds (a seeded ``fraction_evaluate``
    of them, except in the last round, where all do), and one progress line is logged per
    round.

    Parameters
    ----------
    federation : Federation
        Connected clients by partition id.
    participants : list[int]
        Partition ids that may be sampled for training.
    num_rounds : int
        Rounds this strategy will run (the last one is always evaluated).
    fraction_train : float (default: 1.0)
        Fraction of participants sampled per round (at least one).
    evaluate_every : int (default: 1)
        Evaluate every this many rounds.
    fraction_evaluate : float (default: 1.0)
        Fraction of all clients (at least one) that evaluate in an evaluated round before
        the last, sampled from a stream of its own (the training sample is unchanged).
        With 10,000 clients, evaluating every one every round costs more than training.
    seed : int (default: 0)
        Seed of the participant sampling.
    phase : str (default: "train")
        Phase name sent to clients (seeds their local shuffling) and shown in logs.
    aggregation : str (default: "weighted")
        ``weighted``: the mean weighted by sample count (FedAvg, seed 000 eq. 1);
        ``mean``: the unweighted mean over the clients (seed 001 eq. 13-14).
    target_error : float (default: 0.0)
        Seed 000 §3.1's convergence rule: when > 0, every round is evaluated and training
        stops at the first round whose validation error (1 - pooled test accuracy) is at
        or below it (recorded as ``converged_round``, T0); ``num_rounds`` is the cap.
        The remaining rounds of Flower's loop then send nothing.
    recorders : list[RoundRecorder] (default: none)
        Training records (``fedunl_flwr.training_records``): each sees every round's
        global model, the clients' returned models (read-only arrays) and their
        aggregation weights. They run on a thread of their own, so that their disk
        writes overlap the clients' next round (100 client models a round: 0.1-0.2 s
        of the ServerApp's time while every client idled); a round's recording ends
        before the next one's starts, and all of it before ``start`` returns.
    client_config : callable, optional
        ``partition id -> entries`` added to that client's train messages (what a
        client-side training record asks of it, e.g. FedAU's auxiliary head).
    """

    def __init__(self, federation: Federation, participants: list[int], num_rounds: int,
                 fraction_train: float = 1.0, evaluate_every: int = 1, seed: int = 0,
                 phase: str = "train", aggregation: str = "weighted",
                 target_error: float = 0.0,
                 recorders: list[RoundRecorder] | None = None,
                 client_config: Callable[[int], Mapping[str, Any]] | None = None,
                 fraction_evaluate: float = 1.0) -> None:
        super().__init__(fraction_train=fraction_train, min_train_nodes=1,
                         min_evaluate_nodes=1, min_available_nodes=1)
        unknown = sorted(set(participants) - set(federation.clients))
        if unknown or not participants:
            raise ValueError(f"invalid participants {participants} (unknown: {unknown})")
        self.federation = federation
        self.participants = sorted(participants)
        self.num_rounds = num_rounds
        self.evaluate_every = evaluate_every
        self.phase = phase
        if aggregation not in AGGREGATION_WEIGHTS:
            raise ValueError(f"aggregation must be one of {sorted(AGGREGATION_WEIGHTS)}, "
                             f"got {aggregation!r}")
        self.aggregation = aggregation
        self.target_error = target_error
        self.recorders = list(recorders or [])
        self.client_config = client_config
        self._sent: ArrayRecord | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._recording: Future | None = None
        self.converged_round: int | None = None
        self.rng = numpy_generator(seed, "sampling", phase)
        self.fraction_evaluate = fraction_evaluate
        self.evaluate_rng = numpy_generator(seed, "evaluate-sampling", phase)
        self.expected_evaluate: list[int] = []
        self.history: list[RoundRecord] = []
        #: This round's returned models by partition, decoded (earlier rounds' are not
        #: kept: a recorder writes what a phase keeps).
        self.round_models: dict[int, dict[str, np.ndarray]] = {}
        self.client_epochs = 0
        self.expected_train: list[int] = []
        self._evaluating = False
        self._evaluated_arrays = ArrayRecord()
        self._evaluated_key: tuple | None = None
        self._start = time.perf_counter()
        self._round_start = self._start
        self._train_loss = math.nan
        self._trained = 0

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              ) -> Result:
        """Flower's rounds, then the end of the last round's recording (its error
        raised; after a failed round it is awaited and the round's error raised)."""
        try:
            result = super().start(grid, initial_arrays, num_rounds, timeout, train_config,
                                   evaluate_config, evaluate_fn)
        except BaseException:
            recording, self._recording = self._recording, None
            if recording is not None:
                recording.exception()  # no write may outlive the phase
            raise
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
        self._finish_recording()
        return result

    def _record(self, server_round: int, returned: Mapping[int, Mapping[str, np.ndarray]],
                weights: Mapping[int, float]) -> None:
        """This round's recorders on the recording thread, once the last round's ended."""
        self._finish_recording()
        if not self.recorders or self._sent is None:
            return
        sent = from_record(self._sent)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="fedunl-records")

        def record() -> None:
            for recorder in self.recorders:
                recorder.record(server_round, sent, returned, weights)

        self._recording = self._writer.submit(record)

    def _finish_recording(self) -> None:
        recording, self._recording = self._recording, None
        if recording is not None:
            recording.result()

    def summary(self) -> None:
        log(INFO, "\t├──> %s: phase %s, participants %s", type(self).__name__, self.phase,
            self.participants)
        super().summary()

    def sample_participants(self, server_round: int) -> list[int]:
        """Seeded sample of ``fraction_train`` of the participants."""
        return _sample(self.rng, self.participants, self.fraction_train)

    def sample_evaluators(self, server_round: int) -> list[int]:
        """Every client in the last round, else a seeded ``fraction_evaluate`` of them."""
        everyone = self.federation.partition_ids
        if server_round >= self.num_rounds:
            return list(everyone)
        return _sample(self.evaluate_rng, everyone, self.fraction_evaluate)

    def train_messages(self, partition_ids: list[int], arrays: ArrayRecord,
                       config: ConfigRecord) -> list[Message]:
        """One train message per partition id, carrying the global model and config
        (plus the client's own ``client_config`` entries)."""
        if self.client_config is None:
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
            return list(self._construct_messages(
                record, self.federation.node_ids(partition_ids), MessageType.TRAIN))
        messages: list[Message] = []
        for pid in partition_ids:
            own = ConfigRecord({**dict(config), **self.client_config(pid)})
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: own})
            messages += list(self._construct_messages(
                record, self.federation.node_ids([pid]), MessageType.TRAIN))
        return messages

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Send the global model to the sampled participants."""
        self._round_start = time.perf_counter()
        self.expected_train = []
        if self.converged_round is not None:
            return []
        config[protocol.SERVER_ROUND] = server_round
        config[protocol.PHASE] = self.phase
        self._sent = arrays
        sampled = self.sample_participants(server_round)
        self.expected_train = self.federation.node_ids(sampled)
        return self.train_messages(sampled, arrays, config)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Keep each client's returned model, then average them in partition-id order.

        The order is fixed so that identical runs give identical floating-point sums;
        the weights follow ``aggregation`` (:data:`AGGREGATION_WEIGHTS`). Each reply's
        arrays are decoded once, for the check, the recorders and the mean.
        """
        replies = list(replies)
        raise_on_errors(replies, f"{self.phase} round {server_round}", self.expected_train,
                        self.federation)
        trained = {}
        for reply in replies:
            train_reply = TrainReply.from_content(reply.content)
            trained[self.federation.partition_of(reply, train_reply.partition_id)] = train_reply
        weigh = AGGREGATION_WEIGHTS[self.aggregation]
        metrics = []
        returned: dict[int, dict[str, np.ndarray]] = {}
        self.round_models = returned
        weights: dict[int, float] = {}
        for pid, train_reply in sorted(trained.items()):
            returned[pid] = from_record(train_reply.arrays)
            for array in returned[pid].values():  # shared with the recording thread
                array.flags.writeable = False
            check_not_diverged(train_reply.train_loss, returned[pid],
                               f"{self.phase} round {server_round}, client {pid}")
            weights[pid] = weigh(train_reply)
            self.client_epochs += train_reply.local_epochs
            metrics.append(RecordDict({"metrics": MetricRecord(
                {"weight": weights[pid], "train-loss": train_reply.train_loss})}))
        self._trained = len(replies)
        if not returned:  # converged: nothing was sent
            return None, None
        self._record(server_round, returned, weights)
        averaged = aggregate_metricrecords(metrics, "weight")
        self._train_loss = float(scalar(averaged, "train-loss"))
        if not self._evaluates(server_round):
            self._log_round(server_round, math.nan)
        return to_record(fedavg_mean(returned, weights)), averaged

    def _evaluates(self, server_round: int) -> bool:
        if self.converged_round is not None:
            return False
        return (self.target_error > 0 or server_round % self.evaluate_every == 0
                or server_round == self.num_rounds)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """The sampled clients (all in the last round) evaluate the global model on their
        test split."""
        self._evaluating = self._evaluates(server_round)
        if not self._evaluating:
            return []
        self._evaluated_arrays = arrays
        self.expected_evaluate = self.sample_evaluators(server_round)
        config[protocol.SERVER_ROUND] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(
            record, self.federation.node_ids(self.expected_evaluate), MessageType.EVALUATE)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """Accuracy over all clients' test data; logs the round's progress line."""
        replies = list(replies)
        if not self._evaluating:
            return None
        raise_on_errors(replies, f"{self.phase} evaluation round {server_round}",
                        self.federation.node_ids(self.expected_evaluate), self.federation)
        evaluations = evaluations_in(replies, self.federation)
        # Kept for the phase's evaluation of the final model (phases.evaluate_clients):
        # only the latest round's, so a long run holds one set.
        if self._evaluated_key is not None:
            self.federation.answers.pop(self._evaluated_key, None)
        self._evaluated_key = evaluation_key(self._evaluated_arrays, self.expected_evaluate)
        self.federation.answers[self._evaluated_key] = evaluations
        correct = sum(int(e.class_correct.sum()) for e in evaluations.values())
        total = sum(int(e.class_total.sum()) for e in evaluations.values())
        accuracy = correct / max(1, total)
        self._log_round(server_round, accuracy)
        if self.target_error > 0 and 1.0 - accuracy <= self.target_error:
            self.converged_round = server_round
            log(INFO, "fedunl %s: converged at round %d (validation error %.4f <= %.4f)",
                self.phase, server_round, 1.0 - accuracy, self.target_error)
        return MetricRecord({"accuracy": accuracy})

    def _log_round(self, server_round: int, accuracy: float) -> None:
        now = time.perf_counter()
        record = RoundRecord(server_round, now - self._round_start, now - self._start,
                             self._train_loss, accuracy, self._trained)
        self.history.append(record)
        shown = "   n/a" if math.isnan(accuracy) else f"{100 * accuracy:6.2f}%"
        left = self.num_rounds - server_round
        log(INFO, "fedunl %s round %d/%d | %.1f s | train loss %.4f | accuracy %s | ETA %s",
            self.phase, server_round, self.num_rounds, record.seconds, record.train_loss,
            shown, format_eta(record.elapsed / server_round * left))

    def history_rows(self) -> list[dict]:
        """Per-round records as plain dicts (for CSV/JSON)."""
        return [asdict(record) for record in self.history]


def _sample(rng: np.random.Generator, ids: list[int], fraction: float) -> list[int]:
    """A seeded ``fraction`` of ``ids`` (at least one), sorted; all of them at 1."""
    count = max(1, math.ceil(fraction * len(ids)))
    if count >= len(ids):
        return list(ids)
    return sorted(rng.choice(ids, size=count, replace=False).tolist())
