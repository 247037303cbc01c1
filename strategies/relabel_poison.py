"""Relabel-Poison under the fair protocol (seed 000, Table 4 "Relabel")."""

from __future__ import annotations

from strategies.fair_protocol import RetrainRoute


class RelabelPoison(RetrainRoute):
    """Requesting clients relabel their forget-class samples to random other classes
    and retrain for R rounds; every other client contributes its cached final model.

    Train messages carry the global model and ``relabel-classes``; each requesting
    client draws every forget-class sample's new label uniformly from the other
    classes (seeded per client, the same draw every round).
    """

    name = "relabel-poison"
    fair = True
    relabel = True
