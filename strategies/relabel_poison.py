"""Relabel-Poison under the fair protocol (seed 000, Table 4 "Relabel")."""

from __future__ import annotations

from fedunl_flwr.methods import register_method
from strategies.fair_protocol import FAIR_OTHERS, RetrainRoute


@register_method("relabel-poison", label="Relabel", order=20, scopes=("class",), doc=(
                 "fair protocol: the requesting clients retrain with their forget-class samples "
                 "relabelled to random non-target classes"),
                 options=(FAIR_OTHERS,))
class RelabelPoison(RetrainRoute):
    """Requesting clients relabel their forget-class samples to random other classes
    and retrain for R rounds; every other client contributes its cached final model.

    Train messages carry the global model and ``relabel-classes``; each requesting
    client draws every forget-class sample's new label uniformly from the other
    classes (seeded per client, the same draw every round).
    """

    fair = True
    relabel = True
