"""Tests of Grouped Memorization Evaluation, local fairness and the time analysis helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedunl_flwr.metrics.fairness import LOCAL_FAIRNESS_REPORT_SCALE, local_fairness, loss_changes
from fedunl_flwr.metrics.memorization import (
    MEMORIZATION_GROUP_LABELS,
    MEMORIZATION_GROUPS,
    TABLE_COLUMNS,
    assign_memorization_groups,
    group_accuracies,
    grouped_memorization_table,
    memorization_scores,
)
from fedunl_flwr.metrics.timing import (
    PeakResult,
    csl_memorization_agreement,
    speedup,
    time_to_peak,
    time_to_plateau,
)


def test_group_constants() -> None:
    assert MEMORIZATION_GROUPS == ((95, 100), (90, 95), (85, 90), (80, 85), (0, 80))
    assert MEMORIZATION_GROUP_LABELS[0] == "(95%,100%]"
    assert MEMORIZATION_GROUP_LABELS[-1] == "(0%,80%]"


def test_memorization_scores_subtract_mean_of_retrained() -> None:
    p_original = np.array([0.9, 0.5, 0.2])
    p_retrained = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.2]])  # means 0.2, 0.4, 0.3
    np.testing.assert_allclose(memorization_scores(p_original, p_retrained), [0.7, 0.1, -0.1])
    np.testing.assert_allclose(memorization_scores(p_original, np.array([0.9, 0.0, 0.2])),
                               [0.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="p_retrained"):
        memorization_scores(p_original, np.ones((2, 4)) * 0.5)
    with pytest.raises(ValueError, match="probabilities"):
        memorization_scores(np.array([1.5, 0.1, 0.1]), p_retrained)


def test_groups_of_100_distinct_scores_are_5_5_5_5_79() -> None:
    rng = np.random.default_rng(0)
    scores = rng.permutation(100) / 100.0  # 0.00 .. 0.99
    groups = assign_memorization_groups(scores)
    assert np.bincount(groups[groups >= 0], minlength=5).tolist() == [5, 5, 5, 5, 79]
    top = np.argsort(scores)[-5:]
    assert set(np.flatnonzero(groups == 0)) == set(top.tolist())
    assert groups[np.argmin(scores)] == -1  # the minimum is never above the 0th percentile


def test_negative_scores_are_clipped_and_fall_out_of_every_group() -> None:
    """The authors' rule: clip at 0; P_0 is then 0 and score-0 samples join no group."""
    scores = np.array([-0.5, -0.1, 0.0, 0.2, 0.4, 0.6, 0.8, 0.9])
    groups = assign_memorization_groups(scores)
    assert groups[:3].tolist() == [-1, -1, -1]
    # clipped [0,0,0,.2,.4,.6,.8,.9]: P95=.865, P90=.83, P85=.79, P80=.72 (linear)
    assert groups[3:].tolist() == [4, 4, 4, 2, 0]
    # without clipping, -0.5 would have set P_0 and put -0.1 and 0.0 into (0%,80%]
    assert (assign_memorization_groups(np.zeros(20)) == -1).all()
    with pytest.raises(ValueError, match="NaN"):
        assign_memorization_groups(np.array([0.1, np.nan]))


def test_group_accuracies_with_empty_group_is_nan() -> None:
    correct = np.array([True, False, True, True, False, True])
    groups = np.array([0, 0, 1, 4, 4, 4])  # groups 2 and 3 empty
    acc = group_accuracies(correct, groups)
    assert acc[0] == 0.5 and acc[1] == 1.0
    assert math.isnan(acc[2]) and math.isnan(acc[3])
    assert acc[4] == pytest.approx(2 / 3)


def test_grouped_table_means_stds_and_delta() -> None:
    groups = np.array([0, 1, 2, 3, 4, 4, 4, 4])
    unlearned = np.array(
        [
            [True, True, False, True, True, True, True, False],
            [False, True, False, True, True, True, False, False],
        ]
    )
    retrained = np.array(
        [
            [False, False, False, True, True, True, True, True],
            [False, True, True, True, True, True, True, True],
            [False, False, False, True, True, True, True, False],
        ]
    )
    table = grouped_memorization_table(unlearned, retrained, groups)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert list(table.index) == [*MEMORIZATION_GROUP_LABELS, "D_u"]
    top = table.loc["(95%,100%]"]
    assert top["unlearned_mean"] == pytest.approx(50.0)
    assert top["unlearned_std"] == pytest.approx(50.0)  # population std of {100, 0}
    assert top["retrained_mean"] == pytest.approx(0.0)
    assert top["delta"] == pytest.approx(50.0)
    second = table.loc["(90%,95%]"]
    assert second["retrained_mean"] == pytest.approx(100 / 3)
    assert second["delta"] == pytest.approx(200 / 3)
    rest = table.loc["(0%,80%]"]
    assert rest["unlearned_mean"] == pytest.approx(62.5)  # runs 75% and 50%
    assert rest["retrained_mean"] == pytest.approx(275 / 3)  # 100, 100, 75
    d_u = table.loc["D_u"]
    assert d_u["unlearned_mean"] == pytest.approx((6 / 8 + 4 / 8) / 2 * 100)
    assert d_u["retrained_mean"] == pytest.approx((5 / 8 + 7 / 8 + 4 / 8) / 3 * 100)
    assert d_u["delta"] == pytest.approx(abs(62.5 - 200 / 3))


def test_grouped_table_single_run_and_empty_group() -> None:
    groups = np.array([0, 4, 4])
    table = grouped_memorization_table(np.array([True, True, False]),
                                       np.array([[False, True, True]]), groups)
    assert table.loc["(95%,100%]", "unlearned_std"] == 0.0
    assert table.loc["(95%,100%]", "delta"] == pytest.approx(100.0)
    assert table.loc["(90%,95%]"].isna().all()


def test_loss_changes_and_local_fairness() -> None:
    changes = loss_changes({"0": 1.5, "1": 2.0}, {"0": 1.0, "1": 1.0})
    assert changes == {"0": pytest.approx(0.5), "1": pytest.approx(1.0)}
    assert local_fairness([1.0, 2.0, 3.0]) == pytest.approx(2.0)
    assert local_fairness([0.5, 0.5, 0.5]) == 0.0
    assert local_fairness(changes) == pytest.approx(0.5)
    assert local_fairness([0.001, 0.003], scale=LOCAL_FAIRNESS_REPORT_SCALE) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="at least one"):
        local_fairness([])
    with pytest.raises(ValueError, match="same clients"):
        loss_changes({"0": 1.0}, {"1": 1.0})


def test_time_to_peak_first_round_reaching_peak() -> None:
    times = [10.0, 20.0, 30.0, 40.0, 50.0]
    accuracies = [0.40, 0.70, 0.79, 0.80, 0.80]
    assert time_to_peak(times, accuracies) == PeakResult(round_index=3, time=40.0,
                                                         peak_accuracy=0.80)
    assert time_to_peak(times, accuracies, tolerance=0.015) == PeakResult(2, 30.0, 0.80)
    with pytest.raises(ValueError, match="equal length"):
        time_to_peak(times, accuracies[:-1])
    with pytest.raises(ValueError, match="non-decreasing"):
        time_to_peak([2.0, 1.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="at least one"):
        time_to_peak([], [])


def test_time_to_plateau_stops_where_three_rounds_gain_at_most_half_a_point() -> None:
    times = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
    # round 3 (0.790) is followed by +0.4, +0.5 and -0.1 points: stopped there, although
    # the run's peak (0.800) comes later; round 2 is followed by a 2.9-point gain.
    accuracies = [0.40, 0.76, 0.790, 0.794, 0.795, 0.789, 0.800, 0.800]
    assert time_to_plateau(times, accuracies) == PeakResult(2, 30.0, 0.790)
    # with no gain allowed, every round is followed by some gain: never stopped
    assert time_to_plateau(times, accuracies, min_gain=0.0) is None
    assert time_to_plateau(times[:4], [0.1, 0.2, 0.3, 0.4]) is None  # still rising
    with pytest.raises(ValueError, match="patience"):
        time_to_plateau(times, accuracies, patience=0)


def test_speedup_ratio_and_guards() -> None:
    assert speedup(100.0, 50.0) == pytest.approx(2.0)
    assert speedup(30.0, 60.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="> 0"):
        speedup(100.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        speedup(float("inf"), 1.0)


def test_csl_memorization_agreement() -> None:
    csl = [1.0, 0.0, 1.0, 0.0, 0.0]
    mem = [1.0, 1.0, 0.0, 0.0, 0.0]
    result = csl_memorization_agreement(csl, mem, top_fraction=0.4)  # top 2 of 5
    assert result["cosine"] == pytest.approx(0.5)
    # top-2 CSL = {0, 2}, top-2 mem = {0, 1}: one shared index of two
    assert result["top_overlap"] == pytest.approx(0.5)
    same = csl_memorization_agreement([3.0, 1.0, 2.0, 0.5, 0.1], [6.0, 2.0, 4.0, 1.0, 0.2])
    assert same == {"cosine": pytest.approx(1.0), "top_overlap": 1.0}
    with pytest.raises(ValueError, match="top_fraction"):
        csl_memorization_agreement(csl, mem, top_fraction=0.0)
    with pytest.raises(ValueError, match="zero"):
        csl_memorization_agreement([0.0, 0.0], [1.0, 2.0])
