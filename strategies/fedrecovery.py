"""FedRecovery (Zhang, Chen, Jiang, Cao, Huang; IEEE TIFS 2023): remove the leaving
clients' influence from the final model in one shot, from the stored client updates,
then add Gaussian noise.

The paper (Algorithm 2) works with per-round gradients; with multi-step local training
we use the update form (``../shared/BASELINES.md`` §3): the server keeps every client's
update ``Δ_k^i = w_k^i - w^i`` and the global model ``w^i`` of every round i (training
record :class:`fedunl_flwr.training_records.ClientUpdates` with Δt = 1). With p_k the
round's aggregation weights and U the leaving clients:

1. gradient residual ``r_i = Σ_k p_k Δ_k^i / Σ_k p_k - Σ_{k∉U} p_k Δ_k^i / Σ_{k∉U} p_k``:
   the round's FedAvg step with U minus without U; for one leaving client u and equal
   weights this is the paper's ``(1/n)(Δ_u - mean_{k≠u} Δ_k)`` (0 when U did not train
   in round i; the whole step when nobody else did);
2. weights ``p_i = ‖ΔF_i‖² / Σ_j ‖ΔF_j‖²`` with the global step ``ΔF_i = w^{i+1} - w^i``
   (``w^{T+1}`` the final model);
3. ``w̄ = w^{T+1} - Σ_i p_i r_i``, then ``w_u = w̄ + N(0, σ² I)`` on the trainable
   parameters (BatchNorm statistics get no noise: a negative running variance would
   break the model).

σ is run-config ``fedrecovery-sigma``, default 0 (no noise). The paper's σ follows from
a bound d on ‖w̄ - w̃‖ (its Theorem 3) that needs the loss's smoothness and gradient
bounds, which a deep network does not give; the noise serves the paper's
indistinguishability guarantee (it also perturbs the released original, Algorithm 1), not
the forgetting, and at the scales others tune for deep nets (FedAU's sweep: 0.020-0.025
for AlexNet on CIFAR-10) it costs accuracy. Set it to study that trade-off. Because
Σ p_i = 1, the correction has the size of about one round's residual, not of all T.

No official code was found. Differences from the two implementations we read, which we do
not follow: FedAU's baseline (``baselines/fedrecovery_base.py``) divides by a cumulative
sum of norms paired with the wrong round, drops the -Δ_u term and flips the residual's
sign, multiplies the correction by 5, and accumulates corrections across its σ sweep;
FedCPA's subtracts a delta-space residual with the gradient-space sign (adding the
target's contribution back) and draws noise with std σ² instead of σ.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np
from flwr.serverapp import Grid

from fedunl_flwr.aggregation import Arrays, weighted_mean
from fedunl_flwr.config import RunConfig
from fedunl_flwr.methods import Option, register_method
from fedunl_flwr.phases import parameter_names
from fedunl_flwr.records import from_record, to_record
from fedunl_flwr.seeding import numpy_generator
from fedunl_flwr.training_records import (
    ClientUpdates,
    RoundUpdates,
    read_client_updates,
    records_bytes,
)
from strategies.memorization_eval import memorization_summary
from strategies.unlearning import UnlearningMethod, UnlearningOutcome, UnlearningRun
from strategies.verification import verification_summary

SIGMA = Option("fedrecovery-sigma", 0.0,
               "FedRecovery: std of the Gaussian noise added to the corrected model's "
               "parameters (0 = none; the paper's bound is not computable for deep nets)",
               lambda value: value >= 0, "must be >= 0")

#: Every round's updates: FedRecovery weighs each round's residual.
EVERY_ROUND = ClientUpdates(1)


# --- the math ------------------------------------------------------------------------------
def round_residual(stored: RoundUpdates, leaving: Sequence[int]) -> dict[str, np.ndarray]:
    """``r_i``: the round's weighted mean update with the leaving clients minus without
    them (float64; zeros when none of them trained in the round)."""
    names = list(stored.global_arrays)
    if not any(k in stored.updates for k in leaving):
        return {n: np.zeros_like(stored.global_arrays[n], dtype=np.float64) for n in names}
    with_all = weighted_mean(stored.updates, stored.weights, names)
    others = {k: u for k, u in stored.updates.items() if k not in leaving}
    if not others:
        return with_all
    without = weighted_mean(others, stored.weights, names)
    return {n: with_all[n] - without[n] for n in names}


def squared_norm(arrays: Arrays) -> float:
    """``‖·‖²`` of all tensors taken as one vector (float64 accumulation)."""
    return sum(float(np.square(v, dtype=np.float64).sum()) for v in arrays.values())


def recovery_correction(rounds: Iterable[RoundUpdates], final: Arrays,
                        leaving: Sequence[int]) -> tuple[dict[str, np.ndarray], list[float]]:
    """``Σ_i p_i r_i`` over the stored rounds and the weights ``p_i``, streaming: each
    round's residual waits only for the next round's global model (its ``ΔF_i``)."""
    numerator: dict[str, np.ndarray] = {}
    step_norms: list[float] = []
    pending: tuple[dict[str, np.ndarray], Arrays] | None = None

    def settle(residual: dict[str, np.ndarray], start: Arrays, end: Arrays) -> None:
        weight = squared_norm({n: np.asarray(end[n], np.float64) - start[n] for n in start})
        step_norms.append(weight)
        for name, value in residual.items():
            numerator[name] = numerator.get(name, 0.0) + weight * value

    for stored in rounds:
        if pending is not None:
            settle(*pending, stored.global_arrays)
        pending = (round_residual(stored, leaving), stored.global_arrays)
    if pending is None:
        raise ValueError("no stored round to recover from")
    settle(*pending, final)
    total = sum(step_norms)
    if total <= 0:
        raise ValueError("the global model never moved: the rounds' weights are undefined")
    correction = {name: value / total for name, value in numerator.items()}
    return correction, [w / total for w in step_norms]


def recover(final: Arrays, correction: Arrays, sigma: float, noisy: Sequence[str],
            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``w̄ = final - correction``, plus ``N(0, σ²)`` on the tensors ``noisy``, in the final
    model's dtypes."""
    out = {}
    for name, value in final.items():
        new = np.asarray(value, np.float64) - correction[name]
        if sigma > 0 and name in noisy:
            new = new + rng.normal(0.0, sigma, size=new.shape)
        out[name] = new.astype(value.dtype)
    return out


# --- the method -----------------------------------------------------------------------------
@register_method("fedrecovery", label="FedRecovery", order=63, scopes=("client",), doc=(
                 "FedRecovery (Zhang et al. 2023): server-only, one shot: subtract the "
                 "leaving clients' round residuals weighted by the global steps' norms, "
                 "then Gaussian noise (`fedrecovery-sigma`)"), options=(SIGMA,))
class FedRecovery(UnlearningMethod):
    """Subtract the p_i-weighted residuals of the leaving clients from the final model."""

    evaluations = (memorization_summary, verification_summary)
    trains_on_remaining = True

    def training_records(self, config: RunConfig) -> tuple[ClientUpdates, ...]:
        return (EVERY_ROUND,)

    def unlearn(self, grid: Grid, run: UnlearningRun) -> UnlearningOutcome:
        config = run.config
        start = time.perf_counter()
        leaving = list(run.request.clients)
        final = from_record(run.original.arrays)
        correction, weights = recovery_correction(
            read_client_updates(run.original.store, EVERY_ROUND), final, leaving)
        parameters = parameter_names(config, run.federation.num_classes)
        rng = numpy_generator(config.seed, "noise", "fedrecovery")
        sigma = float(config.option(SIGMA.key))
        recovered = recover(final, correction, sigma, parameters, rng)
        return UnlearningOutcome(to_record(recovered), figures={
            "unlearn_seconds": time.perf_counter() - start,
            "round_weights": weights, "sigma": sigma,
            "correction_norm": squared_norm(correction) ** 0.5,
            "records_bytes": records_bytes(run.original.store)[EVERY_ROUND.folder]})

