"""Retraining without the forget data: the gold standard of seed 001 (J seeds).

``retrain`` trains from a fresh initialisation with FedAvg on the remaining data
(remaining clients; for class- and sample-level requests every client trains without
its forget samples) for ``num-server-rounds`` rounds, J = ``retrain-seeds`` times
(2J with ``heldout-retrains``). Retrained model j starts from initialisation stream
``(seed, "init", 1 + j)`` and shuffles with its own data-order streams (phase
``retrain-j``), so it shares neither initial weights nor data order with the original
model (stream ``(seed, "init", 0)``, phase ``train``) or with another retrained model. The Grouped
Memorization Evaluation needs all J models, so each seed's model is a phase of the run
store of its own (``<results-dir>/<scenario>/retrain-<hash>/``), keyed by the training
configuration, the data fingerprint, the request and the seed index only: every
unlearning run with the same original model and request (any rho, selection, rounds,
J' >= index) reuses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from fedunl_flwr import protocol
from fedunl_flwr.config import RunConfig
from fedunl_flwr.federation import Federation, with_data
from fedunl_flwr.methods import register_method
from fedunl_flwr.phases import TrainedModel, initial_arrays, model_for, run_phase
from fedunl_flwr.store import PhaseStore, RunStore
from strategies.remaining import RemainingDataFedAvg
from strategies.unlearning import (
    UnlearningMethod,
    UnlearningOutcome,
    UnlearningRequest,
    UnlearningRun,
)

#: Run-store phase name of one retrained seed.
RETRAIN_PHASE = "retrain"


def retrain_key(config: RunConfig, federation: Federation, request: UnlearningRequest,
                index: int) -> dict:
    """What determines retrained model ``index``: training settings, data, request, seed
    index."""
    return with_data({"training": config.training_key(), "request": request.as_dict(),
                      "retrain_index": index, "init_stream": retrain_init_index(index)},
                     federation.fingerprint)


def retrain_init_index(index: int) -> int:
    """Initialisation stream of retrained model ``index`` (0 is the original model's)."""
    return 1 + index


def retrain_count(config: RunConfig) -> int:
    """Retrained models a memorization evaluation needs: J, or 2J with held-out retrains."""
    return config.retrain_seeds * (2 if config.heldout_retrains else 1)


@dataclass
class RetrainedModels:
    """The J retrained models with their stored summaries (test accuracy, timing)."""

    models: list[TrainedModel]
    summaries: list[dict]
    trained_now: list[bool]

    @property
    def test_accuracies(self) -> list[float]:
        return [float(s["global_accuracy"]) for s in self.summaries]

    @property
    def stores(self) -> list[str]:
        return [str(m.store.path) for m in self.models]

    def as_dict(self) -> dict:
        """JSON-able description (per seed: store, test accuracy, seconds, epochs)."""
        return {
            "indices": [int(s.get("retrain_index", 0)) for s in self.summaries],
            "stores": self.stores,
            "test_accuracy": self.test_accuracies,
            "seconds": [float(s.get("seconds", 0.0)) for s in self.summaries],
            "client_epochs": [int(s.get("client_epochs", 0)) for s in self.summaries],
            "trained_in_this_run": self.trained_now,
        }


@register_method("retrain", doc=(
                 "gold standard: FedAvg from scratch on the remaining data for "
                 "`num-server-rounds`, J = `retrain-seeds` seeds"))
class Retrain(UnlearningMethod):
    """Retrain from scratch on the remaining data (FedAvg, J seeds); the gold standard."""

    trains_on_remaining = True

    def unlearn(self, grid: Grid, run: UnlearningRun) -> UnlearningOutcome:
        """All J retrained models (trained or loaded); the phase's model is seed 0's."""
        retrained = obtain_retrained(grid, run.config, run.federation, run.request,
                                     run.run_store)
        first = retrained.models[0]
        epochs = sum(int(s.get("client_epochs", 0)) for s in retrained.summaries)
        return UnlearningOutcome(first.arrays, first.history, epochs,
                                 {"retrain": retrained.as_dict()})


def obtain_retrained(grid: Grid, config: RunConfig, federation: Federation,
                     request: UnlearningRequest, run_store: RunStore) -> RetrainedModels:
    """The retrained models (:func:`retrain_count`): loaded from the run store, else trained."""
    template = model_for(config, federation.num_classes)
    models, summaries, trained_now = [], [], []
    count = retrain_count(config)
    for index in range(count):
        store = run_store.phase(config.scenario, RETRAIN_PHASE,
                                retrain_key(config, federation, request, index))
        trained_now.append(not store.is_complete())
        models.append(run_phase(
            grid, federation, store, template,
            f"retrained model {index + 1}/{count} (without D_u, {config.num_server_rounds} "
            "rounds)", *_retrain_one(grid, config, federation, request, store, index)))
        summaries.append(store.read_json("summary.json"))
    return RetrainedModels(models, summaries, trained_now)


def _retrain_one(grid: Grid, config: RunConfig, federation: Federation,
                 request: UnlearningRequest, store: PhaseStore, index: int
                 ) -> tuple[Callable[[], TrainedModel], Callable[[TrainedModel], dict]]:
    """The ``produce`` and ``summarize`` of retrained model ``index`` (``run_phase``)."""
    strategy = RemainingDataFedAvg(federation, request, config.num_server_rounds,
                                   fraction_train=config.fraction_train,
                                   evaluate_every=config.evaluate_every, seed=config.seed,
                                   fraction_evaluate=config.fraction_evaluate,
                                   phase=f"retrain-{index}", aggregation=config.aggregation)

    def produce() -> TrainedModel:
        start = time.perf_counter()
        result = strategy.start(grid, initial_arrays(config, federation.num_classes,
                                                     retrain_init_index(index)),
                                num_rounds=config.num_server_rounds,
                                train_config=ConfigRecord({protocol.PHASE: strategy.phase}))
        return TrainedModel(result.arrays, {}, strategy.history_rows(), store,
                            seconds=time.perf_counter() - start)

    def summarize(trained: TrainedModel) -> dict:
        return {"phase": RETRAIN_PHASE, "retrain_index": index,
                "init_stream": retrain_init_index(index),
                "request": request.as_dict(), "seconds": trained.seconds,
                "client_epochs": strategy.client_epochs,
                "participants": strategy.participants}

    return produce, summarize
