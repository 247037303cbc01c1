"""Grouped Memorization Evaluation: unlearning memorization scores, percentile groups, tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "DATASET_ROW_LABEL",
    "MEMORIZATION_GROUPS",
    "MEMORIZATION_GROUP_LABELS",
    "TABLE_COLUMNS",
    "assign_memorization_groups",
    "group_accuracies",
    "grouped_memorization_table",
    "memorization_scores",
]

#: Percentile ranges ``(a, b]`` of the memorization score within D_u, most memorized first
#: (FedMemEraser App. E.2). The group index used everywhere is the position in this tuple.
MEMORIZATION_GROUPS: tuple[tuple[int, int], ...] = (
    (95, 100), (90, 95), (85, 90), (80, 85), (0, 80))

#: Labels of :data:`MEMORIZATION_GROUPS` as the paper prints them, e.g. ``"(95%,100%]"``.
MEMORIZATION_GROUP_LABELS: tuple[str, ...] = tuple(f"({a}%,{b}%]" for a, b in MEMORIZATION_GROUPS)

#: Row label of the whole unlearning data set in :func:`grouped_memorization_table`.
DATASET_ROW_LABEL = "D_u"

#: Columns of :func:`grouped_memorization_table` (all in percent).
TABLE_COLUMNS: tuple[str, ...] = (
    "unlearned_mean",
    "unlearned_std",
    "retrained_mean",
    "retrained_std",
    "delta",
)


def _check_probabilities(values: np.ndarray, what: str) -> None:
    if (not np.all(np.isfinite(values)) or values.min(initial=0.0) < 0.0
            or values.max(initial=0.0) > 1.0):
        raise ValueError(f"{what} must be probabilities in [0, 1] (no NaN)")


def memorization_scores(p_original: np.ndarray, p_retrained: np.ndarray) -> np.ndarray:
    """Unlearning memorization score of each sample of D_u (paper eq. 9).

    ``mem_i = p_original[i] - (1/J) * sum_j p_retrained[j, i]``, where the probabilities are the
    softmax probability of the true label (``metrics.evaluation.per_sample_outputs``) under the
    original model (trained on D_r and D_u) and under J models retrained without D_u.

    Parameters
    ----------
    p_original
        ``[N]`` true-label probabilities of the original model.
    p_retrained
        ``[J, N]`` (or ``[N]`` for J = 1) true-label probabilities of the retrained models.

    Returns
    -------
    np.ndarray
        ``[N]`` float64 scores in [-1, 1]; high means memorized.
    """
    p_original = np.asarray(p_original, dtype=np.float64)
    p_retrained = np.asarray(p_retrained, dtype=np.float64)
    if p_original.ndim != 1:
        raise ValueError(f"p_original must be 1-D [N], got shape {p_original.shape}")
    if p_retrained.ndim == 1:
        p_retrained = p_retrained[None, :]
    if (p_retrained.ndim != 2 or p_retrained.shape[1] != p_original.shape[0]
            or p_retrained.shape[0] == 0):
        raise ValueError(
            f"p_retrained must be [J, N] with J >= 1 and N = {p_original.shape[0]}, "
            f"got {p_retrained.shape}"
        )
    _check_probabilities(p_original, "p_original")
    _check_probabilities(p_retrained, "p_retrained")
    return p_original - p_retrained.mean(axis=0)


def assign_memorization_groups(scores: np.ndarray) -> np.ndarray:
    """Group index (position in :data:`MEMORIZATION_GROUPS`) of each sample, -1 for none.

    As the FedMemEraser authors' evaluation code does: scores below 0 are clipped to 0
    (a sample the retrained models predict better than the original is not memorized),
    the group bounds are the scores' percentiles ``np.percentile(clipped, q)`` (linear
    interpolation) for q in 100, 95, 90, 85, 80, 0, and sample i belongs to group (a, b]
    when ``P_a < s_i <= P_b``. So a sample whose clipped score equals the minimum (0 when
    any score was <= 0) belongs to no group (-1); it still counts in the whole-D_u row.
    With distinct positive scores and N = 100 the groups hold 5, 5, 5, 5 and 79 samples.

    Parameters
    ----------
    scores
        ``[N]`` memorization scores (no NaN).

    Returns
    -------
    np.ndarray
        ``[N]`` int64 group indices, 0 = ``(95%,100%]`` ... 4 = ``(0%,80%]``, -1 = none.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D [N], got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    groups = np.full(scores.size, -1, dtype=np.int64)
    if scores.size == 0:
        return groups
    clipped = np.clip(scores, 0.0, None)
    for index, (low, high) in enumerate(MEMORIZATION_GROUPS):
        lower, upper = np.percentile(clipped, [low, high])
        groups[(clipped > lower) & (clipped <= upper) & (groups < 0)] = index
    return groups


def _check_groups(groups: np.ndarray, n: int) -> np.ndarray:
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
    if not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(f"groups must be integer group indices, got {groups.dtype}")
    if groups.size and (groups.min() < -1 or groups.max() >= len(MEMORIZATION_GROUPS)):
        raise ValueError(f"group indices must lie in [-1, {len(MEMORIZATION_GROUPS)}) "
                         "(-1 = no group)")
    return groups


def group_accuracies(correct: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Accuracy (fraction in [0, 1]) of each memorization group.

    Parameters
    ----------
    correct
        ``[N]`` booleans, True where the model predicts the sample's label.
    groups
        ``[N]`` group indices from :func:`assign_memorization_groups` (-1 = no group).

    Returns
    -------
    np.ndarray
        ``[len(MEMORIZATION_GROUPS)]`` float64 accuracies; NaN for a group without samples.
    """
    correct = np.asarray(correct)
    if correct.ndim != 1:
        raise ValueError(f"correct must be 1-D [N], got shape {correct.shape}")
    if correct.dtype != np.bool_:
        raise ValueError(f"correct must be booleans, got {correct.dtype}")
    groups = _check_groups(groups, correct.size)
    n_groups = len(MEMORIZATION_GROUPS)
    member = groups >= 0
    counts = np.bincount(groups[member], minlength=n_groups).astype(np.float64)
    hits = np.bincount(groups[member], weights=correct[member].astype(np.float64),
                       minlength=n_groups)
    accuracies = np.full(n_groups, np.nan)
    nonempty = counts > 0
    accuracies[nonempty] = hits[nonempty] / counts[nonempty]
    return accuracies


def _per_run_accuracies(correct: np.ndarray, groups: np.ndarray, what: str) -> np.ndarray:
    """``[runs, groups + 1]`` accuracies in percent; the last column is the whole D_u."""
    correct = np.asarray(correct)
    if correct.ndim == 1:
        correct = correct[None, :]
    if correct.ndim != 2 or correct.shape[0] == 0:
        raise ValueError(
            f"{what} must be [runs, N] or [N] with at least one run, got {correct.shape}")
    if correct.shape[1] == 0:
        raise ValueError(f"{what} holds no samples")
    rows = []
    for run in correct:
        per_group = group_accuracies(run, groups)
        rows.append(np.append(per_group, run.mean()) * 100.0)
    return np.vstack(rows)


def _mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and population std (ddof=0), NaN for an all-NaN (empty-group) column."""
    mean = np.full(values.shape[1], np.nan)
    std = np.full(values.shape[1], np.nan)
    defined = ~np.isnan(values).any(axis=0)
    mean[defined] = values[:, defined].mean(axis=0)
    std[defined] = values[:, defined].std(axis=0)
    return mean, std


def grouped_memorization_table(
    correct_unlearned: np.ndarray,
    correct_retrained: np.ndarray,
    groups: np.ndarray,
) -> pd.DataFrame:
    """Table 1 of the paper: accuracy per memorization group, unlearned vs retrained, with Δ.

    Parameters
    ----------
    correct_unlearned
        ``[S, N]`` (S unlearning runs, e.g. seeds) or ``[N]`` correctness of the unlearned
        model(s) on D_u.
    correct_retrained
        ``[J, N]`` (or ``[N]``) correctness of the retrained models on D_u.
    groups
        ``[N]`` group indices from :func:`assign_memorization_groups`.

    Returns
    -------
    pandas.DataFrame
        Index: :data:`MEMORIZATION_GROUP_LABELS` then ``"D_u"`` (all samples). Columns
        :data:`TABLE_COLUMNS`, in percent: mean and population std (ddof=0, so a single run has
        std 0) over runs of the accuracy, and ``delta = |unlearned_mean - retrained_mean|``.
        An empty group has NaN in every column.
    """
    unlearned = _per_run_accuracies(correct_unlearned, groups, "correct_unlearned")
    retrained = _per_run_accuracies(correct_retrained, groups, "correct_retrained")
    if unlearned.shape[1] != retrained.shape[1]:
        raise ValueError("correct_unlearned and correct_retrained must cover the same samples")
    u_mean, u_std = _mean_std(unlearned)
    r_mean, r_std = _mean_std(retrained)
    table = pd.DataFrame(
        {
            "unlearned_mean": u_mean,
            "unlearned_std": u_std,
            "retrained_mean": r_mean,
            "retrained_std": r_std,
            "delta": np.abs(u_mean - r_mean),
        },
        index=pd.Index([*MEMORIZATION_GROUP_LABELS, DATASET_ROW_LABEL], name="group"),
    )
    return table[list(TABLE_COLUMNS)]
