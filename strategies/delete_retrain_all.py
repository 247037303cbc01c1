"""Delete-Retrain with every client retraining: the unfair contrast to the fair protocol."""

from __future__ import annotations

from fedunl_flwr.methods import register_method
from strategies.fair_protocol import RetrainRoute


@register_method("delete-retrain-all", label="Delete-All", order=50, scopes=("class",), doc=(
                 "unfair contrast: every client retrains, the requesting ones without the class"))
class DeleteRetrainAll(RetrainRoute):
    """All clients retrain for R rounds from the current global model; only the
    requesting clients' train messages carry ``exclude-classes``.

    This is the "retrain-all" assumption of earlier federated unlearning work: every
    non-requesting client pays R rounds of local training for another client's
    request. FedAvg over all clients' fresh models, weighted by sample count.
    """

    fair = False
    relabel = False
