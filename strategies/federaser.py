"""FedEraser (Liu, Ma, Yang, Wang, Liu; IWQoS 2021): reconstruct the model without the
leaving clients from the stored client updates, calibrated by a few local epochs.

During the original training the server keeps every client's update
``U_k^{t_j} = w_k^{t_j} - M^{t_j}`` at the retained rounds ``t_j = 1, 1 + Δt, ...``
(training record :class:`fedunl_flwr.training_records.ClientUpdates`). To forget the
leaving clients u, with R the remaining ones and ``w_k`` their aggregation weights
(``N_k`` under FedAvg's weighting, as the paper's w_k = N_k / ΣN):

1. ``M~^{t_1} = M^{t_1}`` (the initial model) and, with no calibration,
   ``M~^{t_2} = M~^{t_1} + Σ_{k∈R} w_k U_k^{t_1} / Σ w_k``;
2. for each later retained round t_j, the remaining clients train
   ``E_cali = ceil(r · E_loc)`` epochs from ``M~^{t_j}`` (a Flower round of
   :class:`CalibrationFedAvg`): ``Û_k = w_k^new - M~^{t_j}``;
3. calibration, per client and over the whole parameter vector as the paper states it:
   ``Ũ_k = ‖U_k^{t_j}‖ · Û_k / ‖Û_k‖``;
4. ``M~^{t_{j+1}} = M~^{t_j} + Σ w_k Ũ_k / Σ w_k`` (the weighted mean; the paper's extra
   1/(K-1) factor would double-normalise weights that already sum to one).

The result is ``M~`` after the last retained round. Buffers (BatchNorm statistics) are
not calibrated: they take the weighted mean of the clients' new buffers.

Differences from the authors' code (Zoybzo/FedEraser-Code, ``Fed_Unlearn_base.py``),
which we do not follow: it calibrates the *averaged* update per state-dict tensor (one
norm per layer, not per client); its old step is taken against the global model *after*
round r (``selected_GMs[epoch+1]``) instead of ``M^r``, so its "old norm" measures the
leaving client's deviation (1/K · ‖mean_R CM^r - CM_u^r‖) rather than the retained
update; its first, uncalibrated step for Δt > 1 uses round Δt-1's models; and it also
calibrates BatchNorm buffers. The paper recommends Δt = 2 and r = 0.5 (the defaults).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from fedunl_flwr import protocol
from fedunl_flwr.aggregation import Arrays, weighted_mean
from fedunl_flwr.config import ConfigError, RunConfig
from fedunl_flwr.federation import Federation
from fedunl_flwr.methods import Option, register_method
from fedunl_flwr.phases import parameter_names
from fedunl_flwr.records import from_record, to_record
from fedunl_flwr.training_records import (
    ClientUpdates,
    RoundUpdates,
    read_client_updates,
    recorded_rounds,
    records_bytes,
)
from strategies.finetune import fine_tune, fine_tuning_strategy
from strategies.memorization_eval import memorization_summary
from strategies.remaining import RemainingDataFedAvg
from strategies.unlearning import (
    UnlearningMethod,
    UnlearningOutcome,
    UnlearningRequest,
    UnlearningRun,
)
from strategies.verification import verification_summary

INTERVAL = Option("federaser-interval", 2,
                  "FedEraser: the server keeps the client updates every this many rounds (Δt; "
                  "rounds 1, 1 + Δt, ...)", lambda value: value >= 1, "must be >= 1")
CALIBRATION_RATIO = Option("federaser-calibration-ratio", 0.5,
                           "FedEraser: calibration epochs = ceil(ratio x local-epochs) (r)",
                           lambda value: 0 < value <= 1, "must be in (0, 1]")



# --- the math ------------------------------------------------------------------------------
def update_norm(update: Arrays, names: Sequence[str]) -> float:
    """‖U‖ over the tensors ``names`` taken as one vector (float64 accumulation)."""
    return math.sqrt(sum(float(np.square(update[n], dtype=np.float64).sum()) for n in names))


def calibrate(new_update: Arrays, old_norm: float, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``‖U_old‖ · Û / ‖Û‖`` on ``names`` (eq. 3 of the paper's §4.2); a zero ``Û`` stays
    zero (its direction is undefined)."""
    norm = update_norm(new_update, names)
    scale = old_norm / norm if norm > 0 else 0.0
    return {n: (np.asarray(new_update[n], dtype=np.float64) * scale) for n in names}


def uncalibrated_step(start: Arrays, stored: RoundUpdates, remaining: Sequence[int]
                      ) -> dict[str, np.ndarray]:
    """``M~^{t_2} = M~^{t_1} + Σ_{k∈R} w_k U_k^{t_1} / Σ w_k`` on every state tensor."""
    updates = {k: stored.updates[k] for k in remaining}
    step = weighted_mean(updates, stored.weights, list(start))
    return {n: (start[n] + step[n]).astype(start[n].dtype) for n in start}


def calibrated_step(current: Arrays, new_models: Mapping[int, Arrays], stored: RoundUpdates,
                    parameters: Sequence[str]) -> dict[str, np.ndarray]:
    """One calibration round: ``M~ + Σ w_k Ũ_k / Σ w_k`` on ``parameters`` (Ũ_k rescaled
    to the stored ``‖U_k^{t_j}‖``); other state tensors (buffers) take the weighted mean
    of the new local models."""
    calibrated = {k: calibrate({n: model[n] - current[n] for n in parameters},
                               update_norm(stored.updates[k], parameters), parameters)
                  for k, model in new_models.items()}
    step = weighted_mean(calibrated, stored.weights, parameters)
    buffers = [n for n in current if n not in step]
    averaged = weighted_mean(new_models, stored.weights, buffers) if buffers else {}
    out = {}
    for name, value in current.items():
        new = value + step[name] if name in step else averaged[name]
        out[name] = np.asarray(np.rint(new) if value.dtype.kind in "iu" else new
                               ).astype(value.dtype)
    return out


# --- the Flower strategy of the calibration rounds ------------------------------------------
class CalibrationFedAvg(RemainingDataFedAvg):
    """The remaining clients train ``E_cali`` epochs from ``M~^{t_j}``; ``aggregate_train``
    replaces FedAvg's average by :func:`calibrated_step` against the stored round ``t_j``
    (server round j of this strategy is the (j+1)-th retained round)."""

    def __init__(self, *args: Any, stored: Iterator[RoundUpdates], parameters: list[str],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored = stored
        self.parameters = parameters
        self.calibrated_rounds: list[int] = []
        self._current: dict[str, np.ndarray] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._current = from_record(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        averaged, metrics = super().aggregate_train(server_round, replies)
        if averaged is None:
            return averaged, metrics
        stored = next(self.stored)
        new_models = self.round_models
        missing = [pid for pid in new_models if pid not in stored.updates]
        if missing:
            raise RuntimeError(f"round {stored.server_round} of the records holds no update of "
                               f"client(s) {missing}")
        self.calibrated_rounds.append(stored.server_round)
        return to_record(calibrated_step(self._current, new_models, stored,
                                                self.parameters)), metrics


# --- the method -----------------------------------------------------------------------------
@register_method("federaser", label="FedEraser", order=67, scopes=("client",), doc=(
                 "FedEraser (Liu et al. 2021): rebuild from the client updates stored every "
                 "`federaser-interval` rounds, each step calibrated by the remaining clients' "
                 "short local training (per-client norm, as the paper)"),
                 options=(INTERVAL, CALIBRATION_RATIO))
class FedEraser(UnlearningMethod):
    """Reconstruct the global model from the retained client updates of the remaining
    clients, calibrating each step's direction by a short local training."""

    evaluations = (memorization_summary, verification_summary)
    trains_on_remaining = True

    def training_records(self, config: RunConfig) -> tuple[ClientUpdates, ...]:
        return (ClientUpdates(config.option(INTERVAL.key)),)

    def validate(self, config: RunConfig, request: UnlearningRequest,
                 federation: Federation) -> None:
        if config.fraction_train < 1:
            raise ConfigError("federaser needs every client's update at the retained rounds: "
                              f"fraction-train must be 1, got {config.fraction_train}")
        if config.target_error > 0:
            raise ConfigError("federaser reconstructs the original's rounds: target-error "
                              "must be 0 (fixed rounds)")

    def unlearn(self, grid: Grid, run: UnlearningRun) -> UnlearningOutcome:
        config = run.config
        start = time.perf_counter()
        spec = ClientUpdates(config.option(INTERVAL.key))
        remaining = run.request.remaining_clients(run.federation)
        parameters = parameter_names(config, run.federation.num_classes)
        retained = recorded_rounds(run.original.store, spec)
        stored = read_client_updates(run.original.store, spec)
        first = next(stored)
        rebuilt = uncalibrated_step(first.global_arrays, first, remaining)
        epochs = max(1, math.ceil(config.option(CALIBRATION_RATIO.key) * config.local_epochs))
        strategy = fine_tuning_strategy(run, CalibrationFedAvg, rounds=len(retained) - 1,
                                        stored=stored, parameters=parameters)
        tuned = fine_tune(grid, run, to_record(rebuilt),
                          offset=time.perf_counter() - start, strategy=strategy,
                          train_config=ConfigRecord({protocol.PHASE: "unlearn",
                                                     protocol.LOCAL_EPOCHS: epochs}))
        record_bytes = records_bytes(run.original.store)[spec.folder]
        return UnlearningOutcome(tuned.arrays, tuned.history, tuned.client_epochs, {
            "unlearn_seconds": tuned.seconds, "retained_rounds": retained,
            "calibrated_rounds": strategy.calibrated_rounds, "calibration_epochs": epochs,
            "records_bytes": record_bytes,
            "records_bytes_per_retained_round": record_bytes // len(retained)})
