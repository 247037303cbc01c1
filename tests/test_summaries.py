"""Typed summaries: JSON round trips, the split of a phase summary, clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedunl_flwr.metrics.evaluation import Evaluation
from fedunl_flwr.reports.accuracy import accuracy_summary
from fedunl_flwr.summaries import (
    CslAgreement,
    GroupAccuracy,
    MemorizationGroups,
    NoiseFloor,
    PhaseSummary,
    RequestSummary,
    TimeAnalysis,
    UnlearningEntries,
    from_json,
    to_json,
)


def evaluations() -> dict[int, Evaluation]:
    return {0: Evaluation(2.0, np.array([3, 0]), np.array([4, 0])),
            1: Evaluation(1.0, np.array([1, 2]), np.array([1, 2]))}


def test_a_phase_summary_splits_accuracy_from_what_the_strategy_added() -> None:
    accuracy = accuracy_summary(evaluations())
    data = {"phase": "unlearn", "strategy": "fedcccu", "config": {"training": {"seed": 1}},
            "class_names": ["a", "b"], "request": {"scope": "class", "clients": [0],
                                                   "classes": [1], "samples": {}},
            "before": to_json(accuracy), "zeroed_units": [["fc", 3]], **to_json(accuracy)}
    summary = PhaseSummary.parse(data)
    assert summary.accuracy == accuracy and summary.before == accuracy
    assert summary.request is not None
    assert summary.request.clients == [0] and summary.training == {"seed": 1}
    assert summary.extra == {"zeroed_units": [["fc", 3]]}
    assert summary.accuracy.clients == [0, 1]
    assert summary.accuracy.class_accuracy(0, 0) == pytest.approx(75.0)
    assert math.isnan(summary.accuracy.class_accuracy(0, 1))  # no test sample of class 1
    assert summary.accuracy.test_count(1, 1) == 2
    assert summary.accuracy.global_accuracy == pytest.approx(6 / 7)


def test_what_an_unlearning_phase_writes_is_read_back_typed() -> None:
    """The writer's typed entries (figures and declared evaluations as top-level keys)
    come back through PhaseSummary.parse and PhaseSummary.evaluation."""
    accuracy = accuracy_summary(evaluations())
    agreement = CslAgreement(available=True, top_fraction=0.2, cosine=0.5, rounds=3)
    entries = UnlearningEntries(
        strategy="fedcccu", request=RequestSummary("class", [0], [1]),
        train_class_counts={"0": [4, 0]}, client_domains={"0": "mnist"}, seconds=1.5,
        client_epochs=2, before=accuracy, global_accuracy_before=0.5,
        global_accuracy_after=0.4, figures={"zeroed_units": [["fc", 3]]},
        evaluations=(agreement,))
    written = entries.to_json()
    assert "collateral_damage" not in written and written["phase"] == "unlearn"
    summary = PhaseSummary.parse({**written, **to_json(accuracy), "config": {},
                                  "class_names": ["a", "b"]})
    assert summary.request == entries.request and summary.before == accuracy
    assert summary.client_epochs == 2 and summary.strategy == "fedcccu"
    assert summary.extra["zeroed_units"] == [["fc", 3]]
    assert summary.evaluation(CslAgreement) == agreement
    assert summary.evaluation(TimeAnalysis) is None


def test_nested_summaries_round_trip_and_missing_keys_are_named() -> None:
    groups = MemorizationGroups(
        num_forget_samples=4, forget_clients=[2], group_rows=["a", "b"], group_sizes=[1, 3],
        negative_scores="clipped", scoring_retrains=[0], reference_retrains=[1],
        retrain_noise_floor=NoiseFloor("scoring set vs held-out set", [50.0, None], [5.0, None]),
        group_accuracy=GroupAccuracy([1.0], [2.0], [[3.0]]),
        mean_score=0.1, retrained_models={"stores": ["r0", "r1"]})
    again = from_json(MemorizationGroups, to_json(groups))
    assert again == groups and isinstance(again.retrain_noise_floor, NoiseFloor)
    assert again.reference_stores == ["r1"]
    assert from_json(CslAgreement, {"available": False, "reason": "none"}).cosine is None
    with pytest.raises(ValueError, match="TimeAnalysis: summary lacks 'budget_rounds'"):
        from_json(TimeAnalysis, {"peak_tolerance": 0.0})
    with pytest.raises(ValueError, match="lacks 'phase'"):
        PhaseSummary.parse({"config": {}})
