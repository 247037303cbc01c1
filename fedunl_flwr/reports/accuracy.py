"""Per-client per-class accuracy tables and the summary they go into."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fedunl_flwr.metrics.evaluation import Evaluation
from fedunl_flwr.summaries import AccuracySummary


def global_accuracy(evaluations: Mapping[int, Evaluation]) -> float:
    """Accuracy over all clients' test data pooled."""
    correct = sum(int(e.class_correct.sum()) for e in evaluations.values())
    total = sum(e.num_examples for e in evaluations.values())
    return correct / max(1, total)


def class_accuracy(evaluation: Evaluation) -> np.ndarray:
    """Per-class accuracy (NaN for a class the client has no test sample of)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(evaluation.class_total > 0,
                        evaluation.class_correct / np.maximum(evaluation.class_total, 1),
                        np.nan)


def accuracy_frame(evaluations: Mapping[int, Evaluation],
                   class_names: Sequence[str]) -> pd.DataFrame:
    """Rows = clients (``client <pid>``), columns = classes and ``all``; percent."""
    rows = {}
    for pid in sorted(evaluations):
        evaluation = evaluations[pid]
        rows[f"client {pid}"] = [*(100 * class_accuracy(evaluation)),
                                 100 * evaluation.accuracy]
    frame = pd.DataFrame.from_dict(rows, orient="index",
                                   columns=[*class_names, "all"])
    frame.loc["global"] = [*[np.nan] * len(class_names), 100 * global_accuracy(evaluations)]
    return frame


def accuracy_summary(evaluations: Mapping[int, Evaluation]) -> AccuracySummary:
    """Per-client per-class accuracy keyed by partition id and class id strings."""
    return AccuracySummary(
        global_accuracy=global_accuracy(evaluations),
        per_client_accuracy={str(p): e.accuracy for p, e in sorted(evaluations.items())},
        per_client_loss={str(p): e.loss for p, e in sorted(evaluations.items())},
        per_client_class_accuracy={
            str(p): {str(c): (None if np.isnan(a) else float(a))
                     for c, a in enumerate(class_accuracy(e))}
            for p, e in sorted(evaluations.items())
        },
        per_client_class_counts={str(p): e.class_total.tolist()
                                 for p, e in sorted(evaluations.items())},
    )


def frame_to_markdown(frame: pd.DataFrame, digits: int = 2) -> str:
    """Markdown table; NaN shown as ``-``."""
    shown = frame.astype(object).where(frame.notna(), None)
    return shown.to_markdown(floatfmt=f".{digits}f", missingval="-") + "\n"
