"""Server side of seed 001's evaluation: Grouped Memorization Evaluation and the rest.

After a seed 001 method (``finetune``, ``fedmemeraser``, ``halimi``, ``not``: those that
declare :func:`memorization_summary`) produced the unlearned model, this module
obtains the J retrained models (``strategies.retrain.obtain_retrained``: loaded from
the run store, trained if missing) and measures, for the summary:

- **Grouped Memorization Evaluation** (App. E.2): the clients holding D_u evaluate
  the original, the unlearned and each retrained model on their own forget samples
  (``query.per_sample``: per-sample true-label probability, correctness, loss);
  mem(x) = p_orig(y|x) - mean_j p_retrain_j(y|x); percentile groups; accuracy per
  group for the unlearned model and the retrained models, with the difference.
- **Accuracy** on D_u and on the test data (all clients' test splits pooled).
- **Local fairness** (×10^3): loss change of each remaining client on its own
  remaining training data (``query.local_loss``), unlearned vs original; for the
  retrained models likewise (one value per seed).
- **Time analysis**: per-round test accuracy of unlearning and of retraining (seed by
  seed), time and rounds to the peak (within :data:`PEAK_TOLERANCE`), speedup.
- **CSL agreement** (App. H.2): cosine and top-20% overlap of the forget samples'
  cumulative training loss (``query.csl``) with their memorization scores.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from logging import INFO, WARNING

import numpy as np
import pandas as pd
import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from fedunl_flwr import protocol
from fedunl_flwr.aggregation import weighted_mean
from fedunl_flwr.federation import Federation, query_clients
from fedunl_flwr.metrics.evaluation import Evaluation
from fedunl_flwr.metrics.fairness import LOCAL_FAIRNESS_REPORT_SCALE, local_fairness, loss_changes
from fedunl_flwr.metrics.memorization import (
    DATASET_ROW_LABEL,
    MEMORIZATION_GROUP_LABELS,
    assign_memorization_groups,
    group_accuracies,
    grouped_memorization_table,
    memorization_scores,
)
from fedunl_flwr.metrics.timing import csl_memorization_agreement, speedup, time_to_peak
from fedunl_flwr.phases import TrainedModel, central_test_accuracies, records_folder_of
from fedunl_flwr.protocol import (
    CslReply,
    LocalLossReply,
    MeanGradientReply,
    PerSampleReply,
)
from fedunl_flwr.reports.accuracy import global_accuracy
from fedunl_flwr.summaries import (
    CslAgreement,
    DuAccuracy,
    GroupAccuracy,
    LocalFairness,
    MemorizationEvaluation,
    MemorizationGroups,
    NoiseFloor,
    TestAccuracy,
    TimeAnalysis,
)
from strategies.retrain import RetrainedModels, obtain_retrained
from strategies.unlearning import (
    UnlearningRequest,
    UnlearningRun,
    forget_holders,
    remaining_participants,
)

#: Share of D_u forming the "most memorized" sets compared for CSL (App. H.2: top 20%).
CSL_TOP_FRACTION = 0.2

#: Row labels of the per-model group accuracies: the five groups, then all of D_u.
GROUP_ROWS: tuple[str, ...] = (*MEMORIZATION_GROUP_LABELS, DATASET_ROW_LABEL)


# --- queries ---------------------------------------------------------------------------
def per_sample(grid: Grid, federation: Federation, request: UnlearningRequest,
               holders: Sequence[int], arrays: ArrayRecord,
               remaining: bool = False) -> dict[str, np.ndarray]:
    """Per-sample outputs of ``arrays`` on D_u, clients in ascending order (on each
    client's remaining training data instead with ``remaining``)."""
    configs = ({p: {**request.removal(p).encode(), protocol.DATA: protocol.REMAINING}
                for p in holders} if remaining else
               {p: request.forget_selection(p).encode() for p in holders})
    replies = query_clients(grid, federation, list(holders), protocol.PER_SAMPLE,
                            PerSampleReply, arrays, configs, memo=True)
    columns = ("positions", "true_prob", "correct", "loss", "entropy", "m_entropy")
    parts: dict[str, list] = {"client": [], **{c: [] for c in columns}}
    for pid in holders:
        reply = replies[pid]
        parts["client"] += [pid] * len(reply.positions)
        for column in columns:
            parts[column] += list(getattr(reply, column))
    return {"client": np.asarray(parts["client"], dtype=np.int64),
            "position": np.asarray(parts["positions"], dtype=np.int64),
            "true_prob": np.clip(np.asarray(parts["true_prob"], dtype=np.float64), 0.0, 1.0),
            "correct": np.asarray(parts["correct"], dtype=np.int64).astype(bool),
            **{c: np.asarray(parts[c], dtype=np.float64) for c in ("loss", "entropy",
                                                                     "m_entropy")}}


def local_losses(grid: Grid, federation: Federation, request: UnlearningRequest,
                 clients: Sequence[int], arrays: ArrayRecord) -> dict[str, float]:
    """Mean loss of ``arrays`` on each client's remaining training data."""
    replies = query_clients(grid, federation, list(clients), protocol.LOCAL_LOSS,
                            LocalLossReply, arrays,
                            {p: request.removal(p).encode() for p in clients}, memo=True)
    return {str(p): replies[p].loss_sum / max(1, replies[p].num_examples) for p in clients}


def mean_gradient(grid: Grid, federation: Federation, clients: Sequence[int],
                  arrays: ArrayRecord, configs: dict[int, dict]) -> dict[str, torch.Tensor]:
    """Unweighted mean over ``clients`` of their mean-loss gradients (Alg. 1 eq. 13)."""
    replies = query_clients(grid, federation, list(clients), protocol.MEAN_GRADIENT,
                            MeanGradientReply, arrays, configs)
    return unweighted_mean([replies[pid].gradient for pid in clients])


def unweighted_mean(gradients: Sequence[Mapping[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """``1/|K_r| * sum_k g_k`` per tensor, in float64 (every client counts once, whatever
    its number of samples: seed 001 eq. 13 and the authors' code)."""
    if not gradients:
        raise ValueError("no client gradients to average")
    mean = weighted_mean(dict(enumerate(gradients)), dict.fromkeys(range(len(gradients)), 1.0))
    return {name: torch.from_numpy(value) for name, value in mean.items()}


# --- timing ----------------------------------------------------------------------------
def accuracy_curve(history: Sequence[dict], offset: float = 0.0) -> list[list[float]]:
    """``[round, elapsed seconds (+ offset), test accuracy]`` of the evaluated rounds."""
    curve = []
    for row in history:
        accuracy = float(row.get("accuracy", math.nan))
        if not math.isnan(accuracy):
            curve.append([int(row["round"]), float(row["elapsed"]) + offset, accuracy])
    return curve


def _peak(curve: list[list[float]], tolerance: float) -> dict | None:
    if not curve:
        return None
    peak = time_to_peak([c[1] for c in curve], [c[2] for c in curve], tolerance)
    return {"time_to_peak": peak.time, "rounds_to_peak": int(curve[peak.round_index][0]),
            "peak_accuracy": peak.peak_accuracy, "total_seconds": curve[-1][1]}


def within_budget(curve: list[list[float]], rounds: int) -> list[list[float]]:
    """The evaluated rounds ``<= rounds`` of a ``[round, seconds, accuracy]`` curve."""
    return [point for point in curve if point[0] <= rounds]


def time_analysis(unlearn_curve: list[list[float]], retrained: RetrainedModels,
                  unlearn_rounds: int, retrain_rounds: int, tolerance: float = 0.0
                  ) -> TimeAnalysis:
    """Time/rounds to peak of unlearning and of each retrained model, and the speedup.

    Both runs get the same round budget B = min(unlearn rounds, retrain rounds): each
    peak is the first round within B that reaches the run's best accuracy within B (minus
    ``tolerance``; 0 = "their respective peak", seed 001 App. E.2). Without a common
    budget a short ``unlearn-rounds`` would set the speedup by itself.
    """
    budget = min(unlearn_rounds, retrain_rounds)
    unlearn_curve = within_budget(unlearn_curve, budget)
    retrain_curves = [within_budget(accuracy_curve(m.history), budget)
                      for m in retrained.models]
    per_seed = [_peak(c, tolerance) for c in retrain_curves]
    unlearn = _peak(unlearn_curve, tolerance)
    known = [p for p in per_seed if p is not None]
    retrain: dict = {"curve": retrain_curves[0] if retrain_curves else [], "per_seed": per_seed}
    speed = None
    if known:
        retrain.update({key: float(np.mean([p[key] for p in known])) for key in
                        ("time_to_peak", "rounds_to_peak", "peak_accuracy", "total_seconds")})
        if unlearn is not None and unlearn["time_to_peak"] > 0:
            speed = speedup(retrain["time_to_peak"], unlearn["time_to_peak"])
    return TimeAnalysis(peak_tolerance=tolerance, budget_rounds=budget,
                        unlearn={**(unlearn or {}), "curve": unlearn_curve}, retrain=retrain,
                        retrain_measured_in_this_run=all(retrained.trained_now), speedup=speed)


# --- the evaluation --------------------------------------------------------------------
def split_retrained(count: int, heldout: bool) -> tuple[list[int], list[int]]:
    """Indices of the retrained models that score memorization and those compared with.

    Held-out: the first half scores, the second half is the reference (disjoint sets).
    Otherwise every model does both, as in the paper.
    """
    if not heldout:
        return list(range(count)), list(range(count))
    if count < 2 or count % 2:
        raise ValueError(f"held-out retrains need an even number (>= 2) of models, got {count}")
    return list(range(count // 2)), list(range(count // 2, count))


def retrain_noise_floor(correct: np.ndarray, scoring: list[int], reference: list[int],
                        groups: np.ndarray) -> NoiseFloor | None:
    """The "retrain vs retrain" row: what Δ a model that IS a fresh retrain gets.

    Held-out: the scoring set's accuracy per group against the reference set's (|Δ|
    includes the selection bias of the scoring set, an upper bound of the floor).
    Otherwise, with J >= 2: retrained model 0 against the mean of the others. None with a
    single retrained model.
    """
    if scoring != reference:
        candidate, against = correct[scoring], correct[reference]
        compared = "scoring set vs held-out set"
    elif len(reference) >= 2:
        candidate, against = correct[:1], correct[1:]
        compared = "retrained model 0 vs the others (in-sample)"
    else:
        return None
    table = grouped_memorization_table(candidate, against, groups)
    return NoiseFloor(compared, [_json_float(v) for v in table["unlearned_mean"]],
                      [_json_float(v) for v in table["delta"]])


def group_sizes(groups: np.ndarray) -> list[int]:
    """Samples per memorization group (samples in no group are not counted)."""
    return np.bincount(groups[groups >= 0], minlength=len(MEMORIZATION_GROUP_LABELS)
                       ).astype(int).tolist()


def test_accuracies(config, federation: Federation, original: ArrayRecord,
                    unlearned: ArrayRecord, retrained: RetrainedModels, reference: list[int],
                    before, after) -> TestAccuracy:
    """Test accuracy (%) on the dataset's real test set, evaluated by the server, of the
    original, the unlearned and the reference retrained models.

    Falls back to the pooled client test splits when the server cannot read the data.
    """
    models = [original, unlearned, *(retrained.models[j].arrays for j in reference)]
    central = central_test_accuracies(config, federation.num_classes, models)
    if central is None:
        return TestAccuracy("pooled client test splits (the server has no dataset)",
                            100.0 * global_accuracy(before), 100.0 * global_accuracy(after),
                            [100.0 * retrained.test_accuracies[j] for j in reference])
    return TestAccuracy("the scenario's real test set(s), evaluated by the server",
                        100.0 * central[0], 100.0 * central[1],
                        [100.0 * a for a in central[2:]])


def _accuracy_row(correct: np.ndarray, groups: np.ndarray) -> list[float | None]:
    values = [*group_accuracies(correct, groups), float(correct.mean())]
    return [None if math.isnan(v) else 100.0 * float(v) for v in values]


def _json_float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _lf(changes: dict[str, float]) -> float:
    return local_fairness(changes, scale=LOCAL_FAIRNESS_REPORT_SCALE)


def memorization_evaluation(grid: Grid, run: UnlearningRun, unlearned: ArrayRecord,
                            unlearn_curve: list[list[float]],
                            after: dict[int, Evaluation]) -> MemorizationEvaluation:
    """Everything seed 001 reports for one unlearned model (goes into summary.json).

    Parameters
    ----------
    grid, run
        The Flower grid and the unlearning run (config, federation, request, original,
        phase store, run store).
    unlearned
        The unlearned global model.
    unlearn_curve
        ``[round, seconds since unlearning started, test accuracy]`` per evaluated round.
    after
        The unlearned model's evaluation on every client's test split (done once by
        the phase runner).
    """
    start = time.perf_counter()
    config, federation, request = run.config, run.federation, run.request
    retrained = obtain_retrained(grid, config, federation, request, run.run_store)
    log(INFO, "fedunl: Grouped Memorization Evaluation on D_u with %d retrained model(s)",
        len(retrained.models))
    holders = forget_holders(request, federation)
    remaining = remaining_participants(request, federation)

    original_out = per_sample(grid, federation, request, holders, run.original.arrays)
    unlearned_out = per_sample(grid, federation, request, holders, unlearned)
    retrained_out = [per_sample(grid, federation, request, holders, m.arrays)
                     for m in retrained.models]
    for other in (unlearned_out, *retrained_out):
        if not np.array_equal(other["position"], original_out["position"]):
            raise RuntimeError("clients evaluated different forget samples for two models")

    # With held-out retrains, one set scores memorization and a disjoint set is the
    # reference the unlearned model is compared with (no selection bias in the reference).
    scoring, reference = split_retrained(len(retrained_out), config.heldout_retrains)
    p_scoring = np.stack([retrained_out[j]["true_prob"] for j in scoring])
    correct_retrained = np.stack([o["correct"] for o in retrained_out])
    mem = memorization_scores(original_out["true_prob"], p_scoring)
    groups = assign_memorization_groups(mem)
    table = grouped_memorization_table(unlearned_out["correct"],
                                       correct_retrained[reference], groups)
    floor = retrain_noise_floor(correct_retrained, scoring, reference, groups)

    # Local fairness over the remaining clients' own (remaining) training data.
    loss_original = local_losses(grid, federation, request, remaining, run.original.arrays)
    loss_unlearned = local_losses(grid, federation, request, remaining, unlearned)
    changes_unlearned = loss_changes(loss_unlearned, loss_original)
    changes_retrained = [loss_changes(local_losses(grid, federation, request, remaining,
                                                   retrained.models[j].arrays), loss_original)
                         for j in reference]

    before = run.original.evaluations
    csl = _csl_agreement(grid, federation, request, holders, original_out, mem,
                         records_folder_of(run.run_store, run.original.store))
    timing = time_analysis(unlearn_curve, retrained, config.unlearn_rounds,
                           config.num_server_rounds, config.peak_tolerance)

    _write_samples(run, original_out, unlearned_out, retrained_out, mem, groups,
                   csl.pop("values", None))
    records = table.reset_index().to_dict("records")
    records = [{k: (_json_float(v) if isinstance(v, float) else v) for k, v in r.items()}
               for r in records]
    unlearned_row = _accuracy_row(unlearned_out["correct"], groups)
    result = MemorizationEvaluation(
        group_table=records,
        du_accuracy=DuAccuracy(
            original=100.0 * float(original_out["correct"].mean()),
            unlearned=100.0 * float(unlearned_out["correct"].mean()),
            retrained=[100.0 * float(c.mean()) for c in correct_retrained[reference]]),
        test_accuracy=test_accuracies(config, federation, run.original.arrays, unlearned,
                                      retrained, reference, before, after),
        local_fairness=LocalFairness(
            scale="x10^-3", unlearned=_lf(changes_unlearned),
            retrained=[_lf(c) for c in changes_retrained],
            loss_changes_unlearned=changes_unlearned, clients=[int(p) for p in remaining]),
        time_analysis=timing,
        csl_agreement=CslAgreement(**csl),
        memorization=MemorizationGroups(
            num_forget_samples=int(mem.size),
            forget_clients=[int(p) for p in holders],
            group_rows=list(GROUP_ROWS),
            group_sizes=group_sizes(groups),
            negative_scores="clipped to 0; score-0 samples belong to no group",
            scoring_retrains=scoring, reference_retrains=reference,
            retrain_noise_floor=floor,
            group_accuracy=GroupAccuracy(
                original=_accuracy_row(original_out["correct"], groups),
                unlearned=unlearned_row,
                retrained=[_accuracy_row(c, groups) for c in correct_retrained[reference]]),
            mean_score=float(mem.mean()),
            retrained_models=retrained.as_dict(),
            evaluation_seconds=time.perf_counter() - start),
    )
    _log_result(table, result)
    return result


def _csl_agreement(grid: Grid, federation: Federation, request: UnlearningRequest,
                   holders: Sequence[int], reference: dict[str, np.ndarray],
                   mem: np.ndarray, records_to: str) -> dict:
    replies = query_clients(grid, federation, list(holders), protocol.CSL, CslReply, None,
                            {p: {**request.forget_selection(p).encode(),
                                 protocol.RECORDS_TO: records_to} for p in holders})
    missing = [p for p in holders if not replies[p].available]
    if missing:
        return {"available": False,
                "reason": f"client(s) {missing} hold no CSL record for this original model "
                          f"(records/csl/ of {records_to}: trained before CSL became a "
                          "training record, or removed)"}
    values = np.concatenate([np.asarray(replies[p].csl, dtype=np.float64) for p in holders])
    positions = np.concatenate([np.asarray(replies[p].positions, dtype=np.int64)
                                for p in holders])
    if not np.array_equal(positions, reference["position"]):
        return {"available": False, "reason": "CSL positions differ from D_u"}
    try:
        agreement = csl_memorization_agreement(values, mem, CSL_TOP_FRACTION)
    except ValueError as err:
        return {"available": False, "reason": str(err), "values": values}
    return {"available": True, "top_fraction": CSL_TOP_FRACTION, **agreement,
            "rounds": min(replies[p].rounds for p in holders),
            "values": values}


def _write_samples(run: UnlearningRun, original: dict, unlearned: dict,
                   retrained: list[dict], mem: np.ndarray, groups: np.ndarray,
                   csl: np.ndarray | None) -> None:
    """``du_samples.csv``: one row per forget sample (scores and outcomes, no data)."""
    frame = pd.DataFrame({
        "client": original["client"], "position": original["position"],
        "mem_score": mem, "group": [GROUP_ROWS[g] if g >= 0 else "none" for g in groups],
        "p_original": original["true_prob"], "p_unlearned": unlearned["true_prob"],
        "p_retrained_mean": np.mean([r["true_prob"] for r in retrained], axis=0),
        "correct_original": original["correct"].astype(int),
        "correct_unlearned": unlearned["correct"].astype(int),
    })
    for index, out in enumerate(retrained):
        frame[f"correct_retrained_{index}"] = out["correct"].astype(int)
    if csl is not None:
        frame["csl"] = csl
    run.store.write_text("du_samples.csv", frame.to_csv(index=False, float_format="%.6g"))


def _log_result(table: pd.DataFrame, result: MemorizationEvaluation) -> None:
    speed = result.time_analysis.speedup
    log(INFO, "fedunl: accuracy by memorization group (%%), unlearned vs retrained:\n%s",
        table.to_markdown(floatfmt=".2f"))
    log(INFO, "fedunl: D_u acc %.2f%% (retrained %s) | test acc %.2f%% | local fairness "
        "%.2f x10^-3 | speedup %s", result.du_accuracy.unlearned,
        ", ".join(f"{a:.2f}%" for a in result.du_accuracy.retrained),
        result.test_accuracy.unlearned, result.local_fairness.unlearned,
        "n/a" if speed is None else f"{speed:.2f}x")
    if not result.csl_agreement.available:
        log(WARNING, "fedunl: CSL agreement not computed: %s", result.csl_agreement.reason)


def memorization_summary(grid: Grid, run: UnlearningRun, unlearned: TrainedModel
                         ) -> MemorizationEvaluation:
    """The seed 001 methods' declared evaluation: :func:`memorization_evaluation` of the
    unlearned model."""
    return memorization_evaluation(grid, run, unlearned.arrays,
                                   accuracy_curve(unlearned.history), unlearned.evaluations)
