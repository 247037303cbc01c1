"""Delete-Retrain under the fair protocol (seed 000, Table 4 "Delete")."""

from __future__ import annotations

from fedunl_flwr.methods import register_method
from strategies.fair_protocol import FAIR_OTHERS, RetrainRoute


@register_method("delete-retrain", label="Delete", order=10, scopes=("class",), doc=(
                 "fair protocol: only the requesting clients retrain without their forget-class "
                 "samples; the others contribute the pretrained global model (`fair-others`)"),
                 options=(FAIR_OTHERS,))
class DeleteRetrain(RetrainRoute):
    """Requesting clients drop their forget-class samples and retrain for R rounds.

    Only they train (from the current global model); every other client contributes
    its cached final model from the original run to each round's FedAvg.
    Train messages carry the global model and ``exclude-classes``; replies carry the
    local model and its sample count.
    """

    fair = True
    relabel = False
