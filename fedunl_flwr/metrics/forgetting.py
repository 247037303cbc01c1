"""Class forgetting measures of seed 000: forget-class accuracy and collateral damage."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from fedunl_flwr.metrics.evaluation import Evaluation
from fedunl_flwr.reports.accuracy import class_accuracy


def forget_class_accuracy(evaluations: Mapping[int, Evaluation], clients: Iterable[int],
                          classes: Iterable[int]) -> float:
    """Accuracy pooled over ``clients``' test samples of ``classes`` (NaN if none)."""
    classes = list(classes)
    correct = sum(int(evaluations[p].class_correct[classes].sum()) for p in clients)
    total = sum(int(evaluations[p].class_total[classes].sum()) for p in clients)
    return correct / total if total else float("nan")


def chance_target(target: float, num_classes: int) -> float:
    """The forget-class accuracy a stopping rule aims at: ``target`` when in [0, 1], else
    chance, 1 / number of classes (what a model that never saw the class would get
    at best by guessing)."""
    return float(target) if 0.0 <= target <= 1.0 else 1.0 / num_classes


def collateral_damage(before: Mapping[int, Evaluation], after: Mapping[int, Evaluation],
                      requesting: Iterable[int], classes: Iterable[int]) -> dict[str, float]:
    """Per non-requesting client: mean accuracy drop (percentage points) over the
    classes it has test samples of, the forgotten ones excluded. Positive = damage."""
    requesting, classes = set(requesting), set(classes)
    damage = {}
    for pid in sorted(before):
        if pid in requesting:
            continue
        was, now = class_accuracy(before[pid]), class_accuracy(after[pid])
        keep = [c for c in range(len(was)) if c not in classes and not np.isnan(was[c])]
        damage[str(pid)] = float(100 * np.mean(was[keep] - now[keep])) if keep else 0.0
    return damage
