"""Unlearning requests and the phase wrapper that every unlearning strategy shares."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from logging import INFO
from pathlib import Path
from typing import ClassVar

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
from fedunl_flwr.summaries import to_json


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
    """The unlearned model plus what the strategy measured on the way."""

    arrays: ArrayRecord
    history: list[dict] = field(default_factory=list)
    client_epochs: int = 0
    extra: dict = field(default_factory=dict)


class UnlearningStrategyMixin:
    """Shared phase handling: validation, run-store folder, before/after evaluation.

    A strategy sets ``name`` and ``scopes`` and implements :meth:`unlearn`.
    """

    name: ClassVar[str] = ""
    scopes: ClassVar[tuple[str, ...]] = ("client", "class", "samples")

    @classmethod
    def validate_request(cls, config: RunConfig, federation: Federation) -> UnlearningRequest:
        """Parse the request and check that this strategy handles its scope."""
        if config.forget_scope not in cls.scopes:
            raise ConfigError(f"strategy {cls.name!r} handles forget-scope "
                              f"{' / '.join(cls.scopes)}, not {config.forget_scope!r}")
        return parse_request(config, federation)

    @classmethod
    def unlearn(cls, grid: Grid, run: UnlearningRun) -> UnlearningOutcome:
        """Produce the unlearned model (implemented by each strategy)."""
        raise NotImplementedError

    @classmethod
    def evaluate_unlearned(cls, grid: Grid, run: UnlearningRun, unlearned: TrainedModel
                           ) -> dict:
        """Hook: a method family's own evaluation of the unlearned model (summary entries).

        Called once the model is saved and evaluated on every client
        (``unlearned.evaluations``); the default adds nothing.
        """
        return {}

    @classmethod
    def run_unlearning(cls, grid: Grid, config: RunConfig, federation: Federation,
                       request: UnlearningRequest, original: TrainedModel,
                       run_store: RunStore) -> Path:
        """Run (or load) the unlearning phase and write its before/after summary."""
        store = run_store.phase(config.scenario, f"unlearn-{cls.name}",
                                with_data(config.unlearning_key(), federation.fingerprint))
        run = UnlearningRun(config, federation, request, original, store, run_store)
        outcome = UnlearningOutcome(original.arrays)

        def produce() -> TrainedModel:
            nonlocal outcome
            log(INFO, "fedunl: unlearning with %s, request %s", cls.name, request.as_dict())
            start = time.perf_counter()
            outcome = cls.unlearn(grid, run)
            return TrainedModel(outcome.arrays, {}, outcome.history, store,
                                seconds=time.perf_counter() - start)

        def summarize(unlearned: TrainedModel) -> dict:
            before, after = original.evaluations, unlearned.evaluations
            extra = {**outcome.extra, **cls.evaluate_unlearned(grid, run, unlearned)}
            if request.scope == "class":
                extra["collateral_damage"] = collateral_damage(before, after, request.clients,
                                                               request.classes)
            return {
                "phase": "unlearn", "strategy": cls.name, "request": request.as_dict(),
                "train_class_counts": {str(p): list(c.train_class_counts)
                                       for p, c in sorted(federation.clients.items())},
                "client_domains": {str(p): c.domain
                                   for p, c in sorted(federation.clients.items())},
                "seconds": unlearned.seconds, "client_epochs": outcome.client_epochs,
                "before": to_json(accuracy_summary(before)),
                "global_accuracy_before": accuracy_summary(before).global_accuracy,
                "global_accuracy_after": accuracy_summary(after).global_accuracy,
                **extra,
            }

        done = run_phase(grid, federation, store, model_for(config, federation.num_classes),
                         f"the {cls.name} unlearning result", produce, summarize,
                         evaluate_stored=True)
        _log_table(cls.name, done.evaluations, federation.class_names)
        return store.path


def _log_table(name: str, evaluations, class_names) -> None:
    log(INFO, "fedunl: after %s, per-client per-class test accuracy (%%):\n%s", name,
        frame_to_markdown(accuracy_frame(evaluations, class_names), digits=1))


def unlearn_config(config: RunConfig, phase: str) -> ConfigRecord:
    """Base train config of an unlearning phase (local epochs may differ)."""
    epochs = config.unlearn_local_epochs or config.local_epochs
    return ConfigRecord({protocol.PHASE: phase, protocol.LOCAL_EPOCHS: epochs})

