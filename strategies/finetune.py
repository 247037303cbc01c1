"""Fine-tuning on the remaining data from the original model (seed 001's rho = 0 row).

``finetune`` runs ``unlearn-rounds`` FedAvg rounds on the remaining data D_r (remaining
clients; with class/sample scope every client without its forget samples) starting
from the original global model. It removes nothing on purpose: the paper shows it
fails to forget the most memorized samples. The phase summary carries the full
seed 001 evaluation (``strategies.memorization_eval``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypeVar

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from fedunl_flwr.methods import register_method
from strategies.memorization_eval import memorization_summary
from strategies.remaining import RemainingDataFedAvg
from strategies.unlearning import UnlearningMethod, UnlearningOutcome, UnlearningRun, unlearn_config
from strategies.verification import verification_summary

#: The fine-tuning strategy class (FedAvg on D_r or a subclass overriding one hook).
S = TypeVar("S", bound=RemainingDataFedAvg)


@dataclass
class FineTuned:
    """Result of the fine-tuning stage."""

    arrays: ArrayRecord
    history: list[dict]
    client_epochs: int
    seconds: float


# mypy cannot type a default for a TypeVar-typed parameter; the default is the bound itself.
def fine_tuning_strategy(run: UnlearningRun,
                         strategy_cls: type[S] = RemainingDataFedAvg,  # type: ignore[assignment]
                         rounds: int | None = None, **kwargs: object) -> S:
    """The Flower strategy of ``rounds`` (default ``unlearn-rounds``) FedAvg rounds on D_r
    (``kwargs`` go to a subclass's own constructor parameters)."""
    config = run.config
    return strategy_cls(run.federation, run.request,
                        config.unlearn_rounds if rounds is None else rounds,
                        fraction_train=config.fraction_train,
                        evaluate_every=config.evaluate_every, seed=config.seed,
                        fraction_evaluate=config.fraction_evaluate,
                        phase="unlearn", aggregation=config.aggregation, **kwargs)


def fine_tune(grid: Grid, run: UnlearningRun, arrays: ArrayRecord, offset: float = 0.0,
              strategy: RemainingDataFedAvg | None = None,
              train_config: ConfigRecord | None = None) -> FineTuned:
    """``strategy.num_rounds`` FedAvg rounds on D_r from ``arrays`` with ``strategy``
    (default :func:`fine_tuning_strategy`: ``unlearn-rounds``) and ``train_config``
    (default the unlearning phase's local epochs).

    ``offset`` (seconds already spent, e.g. locating and resetting parameters) is added
    to each history row's ``elapsed`` so that the curve starts when unlearning started.
    """
    config = run.config
    strategy = strategy or fine_tuning_strategy(run)
    rounds = strategy.num_rounds
    start = time.perf_counter()
    if rounds > 0:
        arrays = strategy.start(grid, arrays, num_rounds=rounds,
                                train_config=train_config or unlearn_config(config,
                                                                            "unlearn")).arrays
    history = strategy.history_rows()
    for row in history:
        row["elapsed"] += offset
    return FineTuned(arrays, history, strategy.client_epochs,
                     offset + time.perf_counter() - start)


@register_method("finetune", label="Fine-tune", order=60, doc=(
                 "FedAvg on the remaining data from the original model for `unlearn-rounds` (= "
                 "FedMemEraser with rho 0)"))
class FineTune(UnlearningMethod):
    """FedAvg on the remaining data from the original model, ``unlearn-rounds`` rounds."""

    evaluations = (memorization_summary, verification_summary)
    trains_on_remaining = True

    def unlearn(self, grid: Grid, run: UnlearningRun) -> UnlearningOutcome:
        tuned = fine_tune(grid, run, run.original.arrays)
        return UnlearningOutcome(tuned.arrays, tuned.history, tuned.client_epochs, {
            "unlearn_seconds": tuned.seconds, "unlearn_rounds": run.config.unlearn_rounds})
