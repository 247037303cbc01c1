"""Base of the model-editing routes: one query round, then zero units of the global model.

Neither Neuron-Zeroing nor FedCCCU trains. Each runs as a one-round Flower
``Strategy``: ``configure_train`` sends a ``query.<action>`` message (global model +
settings) to the clients that must answer, ``aggregate_train`` selects units from the
replies and returns the global model with those units zeroed (each outputs zero for
every input: conv/linear weight and bias and the BatchNorm channel).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO
from typing import ClassVar, Generic, TypeVar

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from fedunl_flwr import protocol
from fedunl_flwr.federation import raise_on_errors
from fedunl_flwr.methods import Option
from fedunl_flwr.metrics.forgetting import chance_target, forget_class_accuracy
from fedunl_flwr.phases import evaluate_clients, model_for
from fedunl_flwr.protocol import ActivationsReply, AttributionReply
from fedunl_flwr.records import from_record, model_to_record, set_weights
from fedunl_flwr.unlearning.neurons import zero_units
from strategies.unlearning import UnlearningMethod, UnlearningOutcome, UnlearningRun
from strategies.verification import verification_summary

#: The run-config keys of every model-editing route.
ZERO_UNITS = Option("zero-units", 50,
                    "Neuron-Zeroing and FedCCCU: at most this many neurons are zeroed (n; with "
                    "`zero-stop=false` exactly n per forget class)",
                    lambda value: value >= 1, "must be >= 1")
ZERO_STOP = Option("zero-stop", True,
                   "zero the ranked neurons one at a time until the requesting clients' "
                   "forget-class test accuracy is at or below `forget-target` (n is the cap)")
FORGET_TARGET = Option("forget-target", -1.0,
                       "the stopping rule's target accuracy in [0, 1]; negative = chance, "
                       "1 / number of classes", lambda value: value <= 1,
                       "must be in [0, 1] (or negative: chance, 1/classes)")
EDITING_OPTIONS = (ZERO_UNITS, ZERO_STOP, FORGET_TARGET)

def zero_units_in_arrays(run: UnlearningRun, arrays: ArrayRecord,
                         units: Iterable[tuple[str, int]]) -> ArrayRecord:
    """The global model ``arrays`` with ``units`` zeroed (a copy)."""
    model = model_for(run.config, run.federation.num_classes)
    set_weights(model, from_record(arrays))
    zero_units(model, units)
    return model_to_record(model)


def zero_until_forgotten(grid: Grid, run: UnlearningRun, ranked: list[dict]
                         ) -> tuple[ArrayRecord, list[dict], list[dict]]:
    """Zero ``ranked`` units one at a time from the original model until the requesting
    clients' forget-class test accuracy is at or below the target.

    Returns the model, the steps (units zeroed, accuracy after) and the units zeroed.
    """
    requesting = list(run.request.clients)
    target = chance_target(run.config.option(FORGET_TARGET.key), run.federation.num_classes)
    arrays = run.original.arrays
    steps = []
    for count in range(len(ranked) + 1):
        if count:
            arrays = zero_units_in_arrays(run, run.original.arrays,
                                          [(u["site"], int(u["unit"])) for u in ranked[:count]])
        accuracy = forget_class_accuracy(
            evaluate_clients(grid, run.federation, arrays, requesting), requesting,
            run.request.classes)
        steps.append({"units": count, "forget_accuracy": accuracy})
        log(INFO, "fedunl %s: %d unit(s) zeroed, requesting clients' forget-class "
            "accuracy %.1f%% (target %.1f%%)", run.config.strategy, count, 100 * accuracy,
            100 * target)
        if not accuracy > target:  # reached (a NaN, no test sample, also stops)
            return arrays, steps, ranked[:count]
    log(INFO, "fedunl %s: the cap of %d unit(s) did not reach the target", run.config.strategy,
        len(ranked))
    return arrays, steps, ranked


#: The typed reply of a model-editing method's query.
R = TypeVar("R", ActivationsReply, AttributionReply)


class NeuronEditing(UnlearningMethod, Generic[R]):
    """Base of the model-editing methods: one :class:`UnitQuery` round, then zero units.

    Subclasses set ``action`` and ``reply_type`` and implement ``query_clients``,
    ``query_config`` and ``select`` (typed replies by partition id -> list of dicts with
    at least ``site`` and ``unit``, in selection order).
    """

    scopes: ClassVar[tuple[str, ...]] = ("class",)
    evaluations = (verification_summary,)
    action: ClassVar[str] = ""
    reply_type: type[R]

    def query_clients(self, run: UnlearningRun) -> list[int]:
        raise NotImplementedError

    def query_config(self, run: UnlearningRun) -> dict:
        raise NotImplementedError

    def select(self, run: UnlearningRun, replies: dict[int, R]) -> list[dict]:
        raise NotImplementedError

    def extra(self, run: UnlearningRun, replies: dict[int, R]) -> dict:
        """Method-specific entries for ``summary.json``."""
        return {}

    def unlearn(self, grid: Grid, run: UnlearningRun) -> UnlearningOutcome:
        """One query round from the original global model; no client trains.

        With ``zero-stop`` the ranked units are zeroed one at a time until the requesting
        clients report (their own test data, an evaluation round) forget-class accuracy
        at or below the target; ``zero-units`` caps the count.
        """
        strategy = UnitQuery(self, run)
        result = strategy.start(grid, run.original.arrays, num_rounds=1)
        steps: list[dict] = []
        arrays, selected = result.arrays, strategy.selected
        if run.config.option(ZERO_STOP.key):
            arrays, steps, selected = zero_until_forgotten(grid, run, selected)
        zeroed = sorted({(item["site"], int(item["unit"])) for item in selected})
        return UnlearningOutcome(arrays, [], 0, {
            "zero_stop": run.config.option(ZERO_STOP.key),
            "forget_target": chance_target(run.config.option(FORGET_TARGET.key),
                                           run.federation.num_classes),
            "zeroing_steps": steps,
            "trained_clients": [],
            "queried_clients": self.query_clients(run),
            "zeroed_units": [[site, unit] for site, unit in zeroed],
            "selected_units": selected,
            "query_seconds": strategy.query_seconds,
            **self.extra(run, strategy.replies),
        })


class UnitQuery(Strategy, Generic[R]):
    """A one-round Flower strategy: ``configure_train`` sends ``query.<action>`` (global
    model + the method's query settings) to the method's clients, ``aggregate_train``
    selects units from the replies and returns the global model with them zeroed."""

    def __init__(self, method: NeuronEditing[R], run: UnlearningRun) -> None:
        self.method: NeuronEditing[R] = method
        self.run = run
        self.selected: list[dict] = []
        self.replies: dict[int, R] = {}
        self.query_seconds = 0.0
        self._arrays: ArrayRecord | None = None
        self._sent = 0.0

    def summary(self) -> None:
        log(INFO, "\t├──> %s: query.%s to clients %s, then zero units", self.method.name,
            self.method.action, self.method.query_clients(self.run))

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The query message: the global model and the query settings."""
        self._arrays = arrays
        config[protocol.SERVER_ROUND] = server_round
        config[protocol.PHASE] = f"unlearn-{self.method.name}"
        for key, value in self.method.query_config(self.run).items():
            config[key] = value
        record = RecordDict({"arrays": arrays, "config": config})
        self._sent = time.perf_counter()
        return [Message(record, dst_node_id=node, message_type=f"query.{self.method.action}")
                for node in self.run.federation.node_ids(self.method.query_clients(self.run))]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Select the units from the replies and zero them in the global model."""
        replies = list(replies)
        self.query_seconds = time.perf_counter() - self._sent
        federation = self.run.federation
        queried = self.method.query_clients(self.run)
        raise_on_errors(replies, f"query {self.method.action!r}", federation.node_ids(queried),
                        federation)
        typed = [(r, self.method.reply_type.from_content(r.content)) for r in replies]
        self.replies = {federation.partition_of(r, reply.partition_id): reply
                        for r, reply in typed}
        self.selected = self.method.select(self.run, self.replies)
        units = [(item["site"], int(item["unit"])) for item in self.selected]
        log(INFO, "fedunl %s: zeroing %d unit(s): %s", self.method.name, len(units),
            ", ".join(f"{site}[{unit}]" for site, unit in units))
        if self._arrays is None:
            raise RuntimeError("aggregate_train before configure_train")
        return (zero_units_in_arrays(self.run, self._arrays, units),
                MetricRecord({"zeroed-units": len(units)}))

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """No evaluation round (the phase evaluates every client afterwards)."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return None
