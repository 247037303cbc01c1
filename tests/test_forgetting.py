"""Forget-class accuracy, the stopping target and collateral damage on hand-made counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedunl_flwr.metrics.evaluation import Evaluation
from fedunl_flwr.metrics.forgetting import chance_target, collateral_damage, forget_class_accuracy


def ev(correct: list[int], total: list[int]) -> Evaluation:
    return Evaluation(0.0, np.array(correct), np.array(total))


def test_forget_class_accuracy_pools_clients_and_classes() -> None:
    evaluations = {0: ev([3, 5, 0], [4, 5, 2]), 1: ev([1, 0, 0], [4, 0, 0])}
    assert forget_class_accuracy(evaluations, [0], [0]) == pytest.approx(3 / 4)
    assert forget_class_accuracy(evaluations, [0, 1], [0, 2]) == pytest.approx(4 / 10)
    assert math.isnan(forget_class_accuracy(evaluations, [1], [2]))


def test_chance_target() -> None:
    assert chance_target(-1.0, 10) == pytest.approx(0.1)
    assert chance_target(0.05, 10) == pytest.approx(0.05)
    assert chance_target(0.0, 4) == 0.0


def test_collateral_damage_excludes_requesters_and_forgotten_classes() -> None:
    before = {0: ev([4, 4], [4, 4]), 1: ev([4, 2, 0], [4, 4, 0]), 2: ev([2, 4, 1], [4, 4, 1])}
    after = {0: ev([0, 4], [4, 4]), 1: ev([0, 1, 0], [4, 4, 0]), 2: ev([0, 4, 0], [4, 4, 1])}
    damage = collateral_damage(before, after, requesting=[0], classes=[0])
    # client 1: class 1 drops 50 -> 25 (class 2 has no test sample); client 2: 100 -> 100
    # and 100 -> 0 over classes 1, 2
    assert damage == {"1": pytest.approx(25.0), "2": pytest.approx(50.0)}
