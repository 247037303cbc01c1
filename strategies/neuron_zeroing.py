"""Neuron-Zeroing (seed 000, Table 4 "Zeroing"): zero the units most activated by the forget
class."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedunl_flwr import protocol
from fedunl_flwr.methods import register_method
from fedunl_flwr.protocol import ActivationsReply, ActivationsRequest
from fedunl_flwr.unlearning.neurons import top_units
from strategies.neuron_editing import EDITING_OPTIONS, ZERO_UNITS, NeuronEditing
from strategies.unlearning import UnlearningRun


def pooled_activations(replies: Mapping[int, ActivationsReply], class_id: int
                       ) -> tuple[dict[str, np.ndarray], int]:
    """Mean activation per unit over all replying clients' samples of ``class_id``.

    Each reply holds per-class means and the number of samples each is over; the pooled
    mean weights each client's mean by its count (= the mean over all those samples).
    """
    sums: dict[str, np.ndarray] = {}
    total = 0
    for pid in sorted(replies):
        reply = replies[pid]
        counts = dict(zip(reply.classes, reply.class_samples, strict=False))
        count = counts.get(class_id, 0)
        if count == 0:
            continue
        total += count
        for (key_class, site), array in reply.means.items():
            if key_class == class_id:
                value = np.asarray(array, dtype=np.float64) * count
                sums[site] = sums[site] + value if site in sums else value
    return {site: value / total for site, value in sums.items()}, total


def select_activation_units(replies: Mapping[int, ActivationsReply],
                            classes: list[int], n: int) -> list[dict]:
    """The ``n`` units with the largest pooled mean activation, per forget class.

    With several forget classes the union is taken (a unit chosen for two classes
    counts once), so up to ``n * len(classes)`` units.
    """
    selected: dict[tuple[str, int], dict] = {}
    for class_id in classes:
        pooled, count = pooled_activations(replies, class_id)
        if count == 0:
            raise ValueError(f"no requesting client reported samples of class {class_id}")
        for site, unit, score in top_units(pooled, n):
            selected.setdefault((site, unit), {"class": class_id, "site": site,
                                               "unit": int(unit), "activation": score,
                                               "samples": count})
    return list(selected.values())


@register_method("neuron-zeroing", label="Zeroing", order=30, scopes=("class",), doc=(
                 "rank units by mean activation on the requesting clients' forget-class data and "
                 "zero them in that order until the forget class is forgotten (stopping rule, n "
                 "= cap)"), options=EDITING_OPTIONS)
class NeuronZeroing(NeuronEditing[ActivationsReply]):
    """Zero the top-n units by mean post-activation on the requesting clients'
    forget-class samples (n = ``zero-units``), ranked across all layers.

    Messages: ``query.activations`` to the requesting clients only, carrying the
    global model and ``classes``; each reply carries per-class, per-unit mean
    activations and the sample counts. No client trains.
    """

    action = protocol.ACTIVATIONS
    reply_type = ActivationsReply

    def query_clients(self, run: UnlearningRun) -> list[int]:
        return sorted(run.request.clients)

    def query_config(self, run: UnlearningRun) -> dict:
        return ActivationsRequest(tuple(run.request.classes)).encode()

    def select(self, run: UnlearningRun, replies: dict[int, ActivationsReply]) -> list[dict]:
        return select_activation_units(replies, list(run.request.classes),
                                       run.config.option(ZERO_UNITS.key))
