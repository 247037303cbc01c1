"""FedCCCU (seed 000): zero the units dominant for the requesting client's forget class.

Every client scores every unit for every class it holds by integrated-gradient
attribution and uploads only its top-N ``(site, unit, score)`` per class. For a unit
in the requesting client's list for the forget class, ``S_forget`` is its score there
and ``S_max_other`` the largest score of the same unit in the other clients' lists
for that class (0 if none lists it); ``R = S_max_other / S_forget``. Units are ranked
by R ascending and the first n are zeroed.

Several requesting clients or forget classes (our generalisation, the paper has one
of each): per forget class, the requesting clients' lists are merged and a unit's
``S_forget`` is its largest score among them; ``S_max_other`` comes from the
non-requesting clients only. n units are selected per forget class and the union is
zeroed (up to ``n * |classes|`` units). Only units with ``S_forget > 0`` are
candidates: a unit that does not raise P(forget class) is not dominant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from fedunl_flwr import protocol
from fedunl_flwr.methods import Option, register_method
from fedunl_flwr.protocol import AttributionReply, AttributionRequest
from fedunl_flwr.unlearning.neurons import Entry, dominance_ratios, select_dominant_units
from strategies.neuron_editing import EDITING_OPTIONS, ZERO_UNITS, NeuronEditing
from strategies.unlearning import UnlearningRun

ATTRIBUTION_TOP_N = Option("attribution-top-n", 50,
                           "top-N (unit, score) entries each client uploads per class (N)",
                           lambda value: value >= 1, "must be >= 1")
ATTRIBUTION_STEPS = Option("attribution-steps", 20, "integrated-gradient steps (m)",
                           lambda value: value >= 1, "must be >= 1")
ATTRIBUTION_SAMPLES = Option("attribution-samples", 256,
                             "at most this many samples per class for attribution",
                             lambda value: value >= 1, "must be >= 1")


def select_fedcccu_units(lists: Mapping[int, Mapping[int, list[Entry]]],
                         forget_clients: list[int], forget_classes: list[int],
                         n: int) -> list[dict]:
    """Rank-based selection of dominant units from the clients' top-N lists.

    Parameters
    ----------
    lists : Mapping[int, Mapping[int, list[Entry]]]
        ``{partition id: {class: [(site, unit, score), ...]}}`` as uploaded.
    forget_clients : list[int]
        Requesting partition ids.
    forget_classes : list[int]
        Classes to forget.
    n : int
        Units to zero per forget class.

    Returns
    -------
    list[dict]
        In selection order (per class, R ascending): ``class``, ``site``, ``unit``,
        ``ratio`` (R), ``s_forget`` and ``s_max_other``. A unit selected for two
        classes appears once (its first selection).
    """
    requesting = set(forget_clients)
    selected: dict[tuple[str, int], dict] = {}
    for class_id in forget_classes:
        forget = [entry for pid in sorted(requesting)
                  for entry in lists.get(pid, {}).get(class_id, [])]
        others = [list(lists[pid].get(class_id, [])) for pid in sorted(lists)
                  if pid not in requesting]
        s_forget: dict[tuple[str, int], float] = {}
        for site, unit, score in forget:
            s_forget[(site, int(unit))] = max(float(score),
                                              s_forget.get((site, int(unit)), -math.inf))
        s_other: dict[tuple[str, int], float] = {}
        for entries in others:
            for site, unit, score in entries:
                s_other[(site, int(unit))] = max(float(score),
                                                 s_other.get((site, int(unit)), -math.inf))
        ratios = [r for r in dominance_ratios(forget, others) if math.isfinite(r[2])]
        for site, unit in select_dominant_units(ratios, n):
            key = (site, int(unit))
            ratio = next(r for s, u, r in ratios if (s, u) == key)
            selected.setdefault(key, {"class": class_id, "site": site, "unit": int(unit),
                                      "ratio": ratio, "s_forget": s_forget[key],
                                      "s_max_other": s_other.get(key, 0.0)})
    return list(selected.values())


@register_method("fedcccu", label="FedCCCU", order=40, scopes=("class",), doc=(
                 "per-client integrated-gradient attribution, dominance ratio R = S_max_other / "
                 "S_forget, zero units by ascending R until the forget class is forgotten "
                 "(stopping rule, n = cap)"),
                 options=(*EDITING_OPTIONS, ATTRIBUTION_TOP_N, ATTRIBUTION_STEPS,
                          ATTRIBUTION_SAMPLES))
class FedCCCU(NeuronEditing[AttributionReply]):
    """Cross-client-constrained unlearning by rank-based selection of dominant units.

    Messages: ``query.attribution`` to every client, carrying the global model,
    ``steps`` (m = ``attribution-steps``), ``top-n`` (N = ``attribution-top-n``) and
    ``samples-per-class`` (``attribution-samples``); each reply carries only the
    client's top-N ``(site, unit, score)`` per class it holds (parallel lists
    ``entry-class`` / ``entry-unit`` / ``entry-score`` and ``entry-site``), its sample
    counts and the seconds the attribution took. No client trains.
    """

    action = protocol.ATTRIBUTION
    reply_type = AttributionReply

    def query_clients(self, run: UnlearningRun) -> list[int]:
        return run.federation.partition_ids

    def query_config(self, run: UnlearningRun) -> dict:
        config = run.config
        return AttributionRequest(config.option(ATTRIBUTION_STEPS.key),
                                  config.option(ATTRIBUTION_TOP_N.key),
                                  config.option(ATTRIBUTION_SAMPLES.key)).encode()

    def select(self, run: UnlearningRun, replies: dict[int, AttributionReply]) -> list[dict]:
        lists = {pid: reply.lists for pid, reply in replies.items()}
        request = run.request
        for pid in request.clients:
            for class_id in request.classes:
                if not lists.get(pid, {}).get(class_id):
                    raise RuntimeError(f"client {pid} sent no attribution entries for "
                                       f"forget class {class_id}")
        return select_fedcccu_units(lists, list(request.clients), list(request.classes),
                                    run.config.option(ZERO_UNITS.key))

    def extra(self, run: UnlearningRun, replies: dict[int, AttributionReply]) -> dict:
        seconds = {str(pid): reply.seconds for pid, reply in sorted(replies.items())}
        return {"attribution_seconds": sum(seconds.values()),
                "attribution_seconds_by_client": seconds,
                "attribution_samples_by_client": {
                    str(pid): reply.num_samples for pid, reply in sorted(replies.items())}}
