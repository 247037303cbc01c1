"""The remaining data of an unlearning request, and FedAvg over it.

Shared by ``retrain``, ``finetune`` and ``fedmemeraser`` (seed 001): who still trains,
what each client drops from its training data, which clients hold the forget data
D_u and how to tell a client which of its samples those are.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from fedunl_flwr.config import ConfigError
from fedunl_flwr.fedavg_train import FedAvgTrain
from fedunl_flwr.federation import Federation
from strategies.unlearning import UnlearningRequest, UnlearningStrategyMixin

#: Called after each round's aggregation: (server_round, aggregate) -> new aggregate.
AfterAggregate = Callable[[int, ArrayRecord], ArrayRecord]


def forget_count(request: UnlearningRequest, federation: Federation, pid: int) -> int:
    """How many of client ``pid``'s training samples are in D_u."""
    info = federation.clients[pid]
    if request.scope == "client":
        return info.num_train if pid in request.clients else 0
    if request.scope == "class":
        if pid not in request.clients:
            return 0
        return sum(info.train_class_counts[c] for c in request.classes)
    return len(request.samples.get(pid, ()))


def remaining_count(request: UnlearningRequest, federation: Federation, pid: int) -> int:
    """How many training samples client ``pid`` keeps (0 for a leaving client)."""
    return federation.clients[pid].num_train - forget_count(request, federation, pid)


def remaining_participants(request: UnlearningRequest, federation: Federation) -> list[int]:
    """Clients that train on the remaining data D_r (K_r): those with a sample left."""
    return [p for p in request.remaining_clients(federation)
            if remaining_count(request, federation, p) > 0]


def forget_holders(request: UnlearningRequest, federation: Federation) -> list[int]:
    """Clients holding part of D_u (K_u); they evaluate their own forget samples."""
    return [p for p in federation.partition_ids if forget_count(request, federation, p) > 0]


def check_remaining_request(request: UnlearningRequest, federation: Federation) -> None:
    """D_u must be non-empty and some client must keep data (checked before any work)."""
    if not forget_holders(request, federation):
        raise ConfigError(f"the unlearning request {request.as_dict()} names no training "
                          "sample: D_u is empty (no client holds the forget classes?)")
    if not remaining_participants(request, federation):
        raise ConfigError(f"the unlearning request {request.as_dict()} leaves no training "
                          "data on any client: nothing to retrain or fine-tune on")


class RemainingDataFedAvg(FedAvgTrain):
    """FedAvg on the remaining data D_r (eq. 14; Alg. 1 stage 3; retraining).

    Participants are the remaining clients with data left; each train message carries
    that client's removal settings (``UnlearningRequest.removal``: drop the forget
    classes or samples), so class- and sample-level requests train without D_u. The
    server averages as run-config ``aggregation`` says (as in the original training).

    Parameters
    ----------
    federation, request
        Connected clients and the validated request.
    num_rounds, fraction_train, evaluate_every, seed, phase, aggregation
        As in :class:`FedAvgTrain`.
    after_aggregate
        Optional hook applied to each round's aggregate before it is evaluated and sent
        on (FedMemEraser's ``gradient-source = update`` resets parameters there).
    """

    def __init__(self, federation: Federation, request: UnlearningRequest, num_rounds: int,
                 fraction_train: float = 1.0, evaluate_every: int = 1, seed: int = 0,
                 phase: str = "unlearn", after_aggregate: AfterAggregate | None = None,
                 aggregation: str = "weighted") -> None:
        super().__init__(federation, remaining_participants(request, federation), num_rounds,
                         fraction_train=fraction_train, evaluate_every=evaluate_every,
                         seed=seed, phase=phase, aggregation=aggregation)
        self.request = request
        self.after_aggregate = after_aggregate

    def train_messages(self, partition_ids: list[int], arrays: ArrayRecord,
                       config: ConfigRecord) -> list[Message]:
        """One message per client, each with its own removal settings."""
        messages: list[Message] = []
        for pid in partition_ids:
            own = ConfigRecord({**dict(config), **self.request.removal(pid).encode()})
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: own})
            messages += list(self._construct_messages(
                record, self.federation.node_ids([pid]), MessageType.TRAIN))
        return messages

    def aggregate_train(self, server_round: int, replies
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg, then the optional ``after_aggregate`` hook."""
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None and self.after_aggregate is not None:
            arrays = self.after_aggregate(server_round, arrays)
        return arrays, metrics


class RemainingDataStrategy(UnlearningStrategyMixin, RemainingDataFedAvg):
    """Base of the strategies that train on the remaining data (retrain, fine-tune, ...).

    Their requests must leave a non-empty D_u and some data to train on.
    """

    @classmethod
    def validate_request(cls, config, federation: Federation) -> UnlearningRequest:
        request = super().validate_request(config, federation)
        check_remaining_request(request, federation)
        return request
