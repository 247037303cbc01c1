"""Local fairness of an unlearned model across the remaining clients (Shao et al. 2024)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["LOCAL_FAIRNESS_REPORT_SCALE", "local_fairness", "loss_changes"]

#: The papers report local fairness in units of 10^-3: multiply the raw value by this.
LOCAL_FAIRNESS_REPORT_SCALE: float = 1e3


def loss_changes(
    loss_unlearned: Mapping[str, float], loss_original: Mapping[str, float]
) -> dict[str, float]:
    """Per-client loss change ``ΔL_k = L(unlearned, D_k) - L(original, D_k)``.

    Parameters
    ----------
    loss_unlearned
        ``client -> mean loss`` of the unlearned model on the client's data (remaining clients).
    loss_original
        ``client -> mean loss`` of the original model on the same clients' data.

    Returns
    -------
    dict[str, float]
        ``client -> ΔL_k`` in the order of ``loss_unlearned``.

    Raises
    ------
    ValueError
        If the two mappings do not name the same clients, are empty, or hold a non-finite loss.
    """
    if not loss_unlearned:
        raise ValueError("no client losses given")
    only_unlearned = sorted(set(loss_unlearned) - set(loss_original), key=str)
    only_original = sorted(set(loss_original) - set(loss_unlearned), key=str)
    if only_unlearned or only_original:
        raise ValueError(
            "loss_unlearned and loss_original must name the same clients; "
            f"only in loss_unlearned: {only_unlearned}, only in loss_original: {only_original}"
        )
    changes: dict[str, float] = {}
    for client, after in loss_unlearned.items():
        before = loss_original[client]
        if not (math.isfinite(after) and math.isfinite(before)):
            raise ValueError(f"non-finite loss for client {client!r}: {after} vs {before}")
        changes[client] = float(after) - float(before)
    return changes


def local_fairness(
    delta_losses: Sequence[float] | Mapping[str, float], *, scale: float = 1.0
) -> float:
    """Local fairness ``LF = scale * sum_k |ΔL_k - mean_k ΔL_k|`` (lower is fairer).

    Parameters
    ----------
    delta_losses
        ``ΔL_k`` of the remaining clients (a sequence, or the mapping from :func:`loss_changes`).
    scale
        Multiplier of the raw value; pass :data:`LOCAL_FAIRNESS_REPORT_SCALE` for the papers'
        ×10^-3 units (a raw 0.03078 is reported as 30.78).

    Returns
    -------
    float
        The (scaled) sum of absolute deviations from the mean change.

    Raises
    ------
    ValueError
        If no change is given or one is not finite.
    """
    values = (list(delta_losses.values()) if isinstance(delta_losses, Mapping)
              else list(delta_losses))
    if not values:
        raise ValueError("local fairness needs the loss change of at least one remaining client")
    values = [float(v) for v in values]
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"loss changes must be finite, got {values}")
    mean = math.fsum(values) / len(values)
    return scale * math.fsum(abs(v - mean) for v in values)
