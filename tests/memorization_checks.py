"""The check every seed 001 method's run test makes: its unlearned model moves the
leaving client's two most memorized groups toward the retrained model."""

from __future__ import annotations

from typing import Any


def top_two_groups(summary: dict[str, Any]) -> tuple[float, float, float]:
    """Accuracy (%) of the original, unlearned and reference retrained model on the two
    most memorized groups taken together (weighted by their sizes)."""
    memorization = summary["memorization"]
    accuracy, sizes = memorization["group_accuracy"], memorization["group_sizes"]

    def pooled(values: list[float]) -> float:
        return (values[0] * sizes[0] + values[1] * sizes[1]) / (sizes[0] + sizes[1])

    return (pooled(accuracy["original"]), pooled(accuracy["unlearned"]),
            pooled(accuracy["retrained"][0]))


def assert_moves_toward_retraining(summary: dict[str, Any], method: str,
                                   margin: float = 0.5) -> None:
    """|unlearned - retrained| < margin x |original - retrained| on the top two groups
    (printed with D_u and test accuracy for the test log)."""
    original, unlearned, retrained = top_two_groups(summary)
    du = summary["memorization"]["group_accuracy"]
    print(f"{method} top two groups: original {original} unlearned {unlearned} retrained "
          f"{retrained}; D_u {du['original'][-1]} -> {du['unlearned'][-1]}; test "
          f"{summary['test_accuracy']}")
    assert abs(unlearned - retrained) < margin * abs(original - retrained)
