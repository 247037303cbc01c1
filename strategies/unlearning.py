"""Unlearning requests, the method object every unlearning method is, and the phase
wrapper that runs a method and writes its before/after summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import INFO
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from fedunl_flwr import protocol
from fedunl_flwr.config import ConfigError, RunConfig, parse_int_list
from fedunl_flwr.federation import Federation, with_data
from fedunl_flwr.methods import TRAIN_ONLY
from fedunl_flwr.metrics.forgetting import collateral_damage
from fedunl_flwr.phases import TrainedModel, model_for, run_phase
from fedunl_flwr.protocol import DataChange, ForgetSelection
from fedunl_flwr.reports.accuracy import accuracy_frame, accuracy_summary, frame_to_markdown
from fedunl_flwr.store import PhaseStore, RunStore
from fedunl_flwr.summaries import RequestSummary, UnlearningEntries
from fedunl_flwr.training_records import RecordSpec

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True)
class UnlearningRequest:
    """Who asks to forget what.

    Parameters
    ----------
    scope : str
        ``client`` (the clients leave), ``class`` (their samples of the classes) or
        ``samples`` (listed sample ids).
    clients : tuple[int, ...]
        Requesting (or leaving) partition ids; for ``class`` scope with no clients
        named, every client forgets the classes (seed 001 App. H.4).
    classes : tuple[int, ...]
        Classes to forget (``class`` scope).
    samples : dict[int, tuple[int, ...]]
        Per client, positions in its training split to forget (``samples`` scope).
    """

    scope: str
    clients: tuple[int, ...]
    classes: tuple[int, ...] = ()
    samples: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def remaining_clients(self, federation: Federation) -> list[int]:
        """Clients that keep training: all but the leaving ones for ``client`` scope."""
        if self.scope == "client":
            return [p for p in federation.partition_ids if p not in self.clients]
        return federation.partition_ids

    def removal(self, partition_id: int) -> DataChange:
        """What a client drops from its training data when retraining without D_u."""
        if self.scope == "class" and partition_id in self.clients:
            return DataChange(exclude_classes=self.classes)
        if self.scope == "samples" and partition_id in self.samples:
            return DataChange(exclude_samples=self.samples[partition_id])
        return DataChange()

    def forget_selection(self, partition_id: int) -> ForgetSelection:
        """Which of client ``partition_id``'s training samples are in D_u."""
        if self.scope == "client":
            return ForgetSelection(everything=partition_id in self.clients)
        if self.scope == "class":
            return ForgetSelection(classes=self.classes if partition_id in self.clients else ())
        return ForgetSelection(samples=self.samples.get(partition_id, ()))

    def as_dict(self) -> dict:
        return {"scope": self.scope, "clients": list(self.clients),
                "classes": list(self.classes),
                "samples": {str(k): list(v) for k, v in self.samples.items()}}


def parse_forget_samples(text: str) -> dict[int, tuple[int, ...]]:
    """``"0:1,2,3;4:7"`` -> ``{0: (1, 2, 3), 4: (7,)}``."""
    samples: dict[int, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        client, sep, ids = part.partition(":")
        if not sep:
            raise ConfigError(f"forget-samples entries are 'client:id,id,...', got {part!r}")
        pid = parse_int_list(client, "forget-samples client")
        if len(pid) != 1:
            raise ConfigError(f"forget-samples: bad client in {part!r}")
        samples[pid[0]] = tuple(sorted(set(samples.get(pid[0], ()))
                                       | set(parse_int_list(ids, "forget-samples ids"))))
    return samples


def check_request_shape(config: RunConfig, num_clients: int) -> None:
    """What can be checked of the request before any client connects: ids in range,
    non-empty lists for the scope, parseable sample ids (raises :class:`ConfigError`)."""
    if config.strategy == TRAIN_ONLY:
        return
    clients = parse_int_list(config.forget_clients, "forget-clients")
    unknown = [c for c in clients if not 0 <= c < num_clients]
    if unknown:
        raise ConfigError(f"forget-clients {unknown} unknown: scenario {config.scenario} has "
                          f"clients 0..{num_clients - 1}")
    if config.forget_scope == "client" and not clients:
        raise ConfigError("forget-scope 'client' needs forget-clients (e.g. \"0\")")
    if config.forget_scope == "class":
        classes = parse_int_list(config.forget_classes, "forget-classes")
        if not classes:
            raise ConfigError("forget-scope 'class' needs forget-classes (e.g. \"0\")")
        negative = [c for c in classes if c < 0]
        if negative:
            raise ConfigError(f"forget-classes {negative} must be >= 0")
    if config.forget_scope == "samples":
        samples = parse_forget_samples(config.forget_samples)
        if not samples:
            raise ConfigError("forget-scope 'samples' needs forget-samples (e.g. \"0:1,2,3\")")
        unknown = [c for c in samples if not 0 <= c < num_clients]
        if unknown:
            raise ConfigError(f"forget-samples names unknown client(s) {unknown}: scenario "
                              f"{config.scenario} has clients 0..{num_clients - 1}")


def parse_request(config: RunConfig, federation: Federation) -> UnlearningRequest:
    """Validate the run-config's request against the connected clients."""
    scope = config.forget_scope
    clients = tuple(sorted(set(parse_int_list(config.forget_clients, "forget-clients"))))
    classes = tuple(sorted(set(parse_int_list(config.forget_classes, "forget-classes"))))
    unknown = [c for c in clients if c not in federation.clients]
    if unknown:
        raise ConfigError(f"forget-clients {unknown} unknown: the clients are "
                          f"0..{len(federation.clients) - 1}")
    if scope == "client":
        if not clients:
            raise ConfigError("forget-scope 'client' needs forget-clients (e.g. \"0\")")
        if len(clients) == len(federation.clients):
            raise ConfigError("forget-clients names every client: nobody would remain")
        return UnlearningRequest(scope, clients)
    if scope == "class":
        if not classes:
            raise ConfigError("forget-scope 'class' needs forget-classes (e.g. \"0\")")
        bad = [c for c in classes if not 0 <= c < federation.num_classes]
        if bad:
            raise ConfigError(f"forget-classes {bad} out of range 0..{federation.num_classes - 1}")
        holders = clients or tuple(federation.partition_ids)
        for pid in clients:
            counts = federation.clients[pid].train_class_counts
            missing = [c for c in classes if counts[c] == 0]
            if missing:
                raise ConfigError(f"client {pid} holds no training sample of class(es) "
                                  f"{missing}; its class counts are {list(counts)}")
        return UnlearningRequest(scope, holders, classes)
    samples = parse_forget_samples(config.forget_samples)
    if not samples:
        raise ConfigError("forget-scope 'samples' needs forget-samples (e.g. \"0:1,2,3\")")
    for pid, ids in samples.items():
        if pid not in federation.clients:
            raise ConfigError(f"forget-samples names unknown client {pid}")
        size = federation.clients[pid].num_train
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise ConfigError(f"forget-samples for client {pid}: ids {bad[:5]} outside "
                              f"0..{size - 1}")
    return UnlearningRequest(scope, tuple(sorted(samples)), (), samples)


@dataclass
class UnlearningRun:
    """Everything an unlearning strategy works from."""

    config: RunConfig
    federation: Federation
    request: UnlearningRequest
    original: TrainedModel
    store: PhaseStore
    run_store: RunStore


@dataclass
class UnlearningOutcome:
    """The unlearned model plus what the method measured on the way (``figures``: its own
    JSON-able figures, top-level keys of the phase summary)."""

    arrays: ArrayRecord
    history: list[dict] = field(default_factory=list)
    client_epochs: int = 0
    figures: dict[str, Any] = field(default_factory=dict)


# --- who holds D_u and who keeps data -------------------------------------------
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


#: A declared evaluation of the unlearned model: ``(grid, run, unlearned) -> a summary
#: dataclass`` (e.g. :class:`fedunl_flwr.summaries.MemorizationEvaluation`), run once the
#: model is saved and evaluated on every client; reports read it back with
#: :meth:`fedunl_flwr.summaries.PhaseSummary.evaluation`.
Evaluation = Callable[[Grid, "UnlearningRun", TrainedModel], "DataclassInstance"]


class UnlearningMethod:
    """One unlearning method: what the registry holds for a ``strategy`` name.

    A method is a small object, not a Flower ``Strategy``: :meth:`unlearn` chooses and
    runs the Flower strategies of its protocol (FedAvg on the remaining data, the fair
    protocol's rounds, a query round). Registration (:func:`fedunl_flwr.methods.
    register_method`) sets ``name`` and ``scopes``. What a method needs is declared:

    - ``evaluations``: run on the unlearned model, their entries go into the phase
      summary (e.g. seed 001's :func:`strategies.memorization_eval.memorization_summary`);
    - ``trains_on_remaining``: the request must leave a non-empty D_u and some data to
      train on (checked before any work);
    - :meth:`training_records`: the history of the original training it unlearns from
      (``fedunl_flwr.training_records``); the original is trained with those recorders.
    """

    name: ClassVar[str] = ""
    scopes: ClassVar[tuple[str, ...]] = ("client", "class", "samples")
    evaluations: ClassVar[tuple[Evaluation, ...]] = ()
    trains_on_remaining: ClassVar[bool] = False

    def training_records(self, config: RunConfig) -> tuple[RecordSpec, ...]:
        """The training records this method reads (none by default)."""
        return ()

    def validate(self, config: RunConfig, request: UnlearningRequest,
                 federation: Federation) -> None:
        """Method-specific checks of a parsed request (raise :class:`ConfigError`)."""

    def check_stored(self, config: RunConfig, request: UnlearningRequest,
                     federation: Federation, original: TrainedModel) -> None:
        """Checks that need the original model, before the phase folder is created."""

    def unlearn(self, grid: Grid, run: UnlearningRun) -> UnlearningOutcome:
        """Produce the unlearned model."""
        raise NotImplementedError


def validate_request(method: UnlearningMethod, config: RunConfig,
                     federation: Federation) -> UnlearningRequest:
    """Parse the request, check the method handles its scope, then the method's checks."""
    if config.forget_scope not in method.scopes:
        raise ConfigError(f"strategy {method.name!r} handles forget-scope "
                          f"{' / '.join(method.scopes)}, not {config.forget_scope!r}")
    request = parse_request(config, federation)
    if method.trains_on_remaining:
        check_remaining_request(request, federation)
    method.validate(config, request, federation)
    return request


def run_unlearning(method: UnlearningMethod, grid: Grid, config: RunConfig,
                   federation: Federation, request: UnlearningRequest,
                   original: TrainedModel, run_store: RunStore) -> Path:
    """Run (or load) ``method``'s unlearning phase and write its before/after summary."""
    method.check_stored(config, request, federation, original)
    store = run_store.phase(config.scenario, f"unlearn-{method.name}",
                            with_data(config.unlearning_key(), federation.fingerprint))
    run = UnlearningRun(config, federation, request, original, store, run_store)
    outcome = UnlearningOutcome(original.arrays)

    def produce() -> TrainedModel:
        nonlocal outcome
        log(INFO, "fedunl: unlearning with %s, request %s", method.name, request.as_dict())
        start = time.perf_counter()
        outcome = method.unlearn(grid, run)
        return TrainedModel(outcome.arrays, {}, outcome.history, store,
                            seconds=time.perf_counter() - start)

    def summarize(unlearned: TrainedModel) -> dict:
        before, after = original.evaluations, unlearned.evaluations
        return UnlearningEntries(
            strategy=method.name, request=RequestSummary(**request.as_dict()),
            train_class_counts={str(p): list(c.train_class_counts)
                                for p, c in sorted(federation.clients.items())},
            client_domains={str(p): c.domain for p, c in sorted(federation.clients.items())},
            seconds=unlearned.seconds, client_epochs=outcome.client_epochs,
            before=accuracy_summary(before),
            global_accuracy_before=accuracy_summary(before).global_accuracy,
            global_accuracy_after=accuracy_summary(after).global_accuracy,
            collateral_damage=collateral_damage(before, after, request.clients,
                                                request.classes)
            if request.scope == "class" else None,
            figures=outcome.figures,
            evaluations=tuple(evaluate(grid, run, unlearned)
                              for evaluate in method.evaluations),
        ).to_json()

    done = run_phase(grid, federation, store, model_for(config, federation.num_classes),
                     f"the {method.name} unlearning result", produce, summarize,
                     evaluate_stored=True)
    _log_table(method.name, done.evaluations, federation.class_names)
    return store.path


def _log_table(name: str, evaluations, class_names) -> None:
    log(INFO, "fedunl: after %s, per-client per-class test accuracy (%%):\n%s", name,
        frame_to_markdown(accuracy_frame(evaluations, class_names), digits=1))


def unlearn_config(config: RunConfig, phase: str) -> ConfigRecord:
    """Base train config of an unlearning phase (local epochs may differ)."""
    epochs = config.unlearn_local_epochs or config.local_epochs
    return ConfigRecord({protocol.PHASE: phase, protocol.LOCAL_EPOCHS: epochs})

