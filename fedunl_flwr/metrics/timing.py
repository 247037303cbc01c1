"""Time analysis (time to peak accuracy, speedup) and CSL-vs-memorization agreement."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["PeakResult", "csl_memorization_agreement", "speedup", "time_to_peak",
           "time_to_plateau"]


class PeakResult(NamedTuple):
    """When a run first reaches its peak accuracy.

    Attributes
    ----------
    round_index
        0-based position in the per-round sequences (round number ``round_index + 1`` when the
        sequences start at round 1).
    time
        Cumulative seconds at that round.
    peak_accuracy
        The maximum accuracy of the run.
    """

    round_index: int
    time: float
    peak_accuracy: float


def time_to_peak(
    times: Sequence[float], accuracies: Sequence[float], tolerance: float = 0.0
) -> PeakResult:
    """First round whose accuracy reaches ``max(accuracies) - tolerance``.

    Parameters
    ----------
    times
        Cumulative wall-clock seconds at the end of each round (non-decreasing).
    accuracies
        Test accuracy after each round (same length as ``times``).
    tolerance
        Slack below the peak that still counts as reaching it (>= 0, same unit as accuracies).

    Returns
    -------
    PeakResult
        ``(round_index, time, peak_accuracy)``.

    Raises
    ------
    ValueError
        On empty or unequal-length inputs, non-finite values, decreasing times, or a negative
        tolerance.
    """
    t = np.asarray(times, dtype=np.float64)
    acc = np.asarray(accuracies, dtype=np.float64)
    if t.ndim != 1 or acc.ndim != 1 or t.size != acc.size:
        raise ValueError(f"times and accuracies must be 1-D of equal length, "
                         f"got {t.shape} and {acc.shape}")
    if t.size == 0:
        raise ValueError("time_to_peak needs at least one round")
    if not (np.isfinite(t).all() and np.isfinite(acc).all()):
        raise ValueError("times and accuracies must be finite")
    if (np.diff(t) < 0).any():
        raise ValueError("times must be cumulative (non-decreasing)")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    peak = float(acc.max())
    index = int(np.argmax(acc >= peak - tolerance))
    return PeakResult(round_index=index, time=float(t[index]), peak_accuracy=peak)


def time_to_plateau(times: Sequence[float], accuracies: Sequence[float],
                    min_gain: float = 0.005, patience: int = 3) -> PeakResult | None:
    """First round after which ``patience`` more rounds raise the best accuracy so far by
    no more than ``min_gain``: where a run stopped on that rule would have stopped
    (issue 25: "no gain above 0.5 points for 3 rounds"); ``peak_accuracy`` is the best
    accuracy up to that round. None when the curve is still rising at its end (fewer
    than ``patience`` rounds after the last gain).

    Raises ``ValueError`` on the inputs :func:`time_to_peak` refuses, a negative
    ``min_gain`` or ``patience < 1``.
    """
    time_to_peak(times, accuracies)  # the same checks of the inputs
    if not math.isfinite(min_gain) or min_gain < 0 or patience < 1:
        raise ValueError(f"min_gain must be >= 0 and patience >= 1, got {min_gain} and "
                         f"{patience}")
    acc = np.asarray(accuracies, dtype=np.float64)
    for index in range(acc.size - patience):
        best = float(acc[:index + 1].max())
        if float(acc[index + 1:index + 1 + patience].max()) - best <= min_gain + 1e-12:
            return PeakResult(round_index=index, time=float(times[index]),
                              peak_accuracy=best)
    return None


def speedup(retrain_peak_time: float, unlearn_peak_time: float) -> float:
    """How many times faster unlearning reaches its peak than retraining: ``retrain / unlearn``.

    Parameters
    ----------
    retrain_peak_time
        Seconds retraining takes to reach its peak (>= 0).
    unlearn_peak_time
        Seconds unlearning takes to reach its peak (> 0).

    Returns
    -------
    float
        The ratio (> 1 means unlearning is faster).

    Raises
    ------
    ValueError
        If a time is not finite, the retrain time is negative, or the unlearn time is not
        positive.
    """
    retrain, unlearn = float(retrain_peak_time), float(unlearn_peak_time)
    if not (math.isfinite(retrain) and math.isfinite(unlearn)):
        raise ValueError(f"peak times must be finite, got {retrain} and {unlearn}")
    if retrain < 0:
        raise ValueError(f"retrain_peak_time must be >= 0, got {retrain}")
    if unlearn <= 0:
        raise ValueError(f"unlearn_peak_time must be > 0 to form a ratio, got {unlearn}")
    return retrain / unlearn


def _top_indices(values: np.ndarray, count: int) -> set[int]:
    """Indices of the ``count`` largest values; ties go to the lower index."""
    order = np.argsort(-values, kind="stable")
    return set(order[:count].tolist())


def csl_memorization_agreement(
    csl: ArrayLike, mem: ArrayLike, top_fraction: float = 0.2
) -> dict[str, float]:
    """Agreement of the cumulative sample loss (CSL) with memorization scores (App. H.2).

    Parameters
    ----------
    csl
        ``[N]`` cumulative per-sample training loss.
    mem
        ``[N]`` memorization scores of the same samples.
    top_fraction
        Share of samples forming each "most memorized" set, in (0, 1].

    Returns
    -------
    dict[str, float]
        ``cosine``: cosine similarity of the two raw score vectors; ``top_overlap``: fraction of
        the ``k = max(1, round_half_up(top_fraction * N))`` highest-CSL samples that are also
        among the k highest-memorization samples (ties go to the lower index).

    Raises
    ------
    ValueError
        On shape mismatch, empty or non-finite input, a zero vector, or ``top_fraction`` outside
        (0, 1].
    """
    a = np.asarray(csl, dtype=np.float64)
    b = np.asarray(mem, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"csl and mem must be 1-D of equal length, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("csl and mem are empty")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("csl and mem must be finite")
    if not math.isfinite(top_fraction) or not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm_a == 0.0 or norm_b == 0.0:
        raise ValueError("cosine similarity is undefined for an all-zero vector")
    cosine = float(np.dot(a, b) / (norm_a * norm_b))
    count = min(a.size, max(1, math.floor(top_fraction * a.size + 0.5)))
    overlap = len(_top_indices(a, count) & _top_indices(b, count)) / count
    return {"cosine": cosine, "top_overlap": float(overlap)}
