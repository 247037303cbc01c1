"""Delete-Retrain under the fair protocol (seed 000, Table 4 "Delete")."""

from __future__ import annotations

from strategies.fair_protocol import RetrainRoute


class DeleteRetrain(RetrainRoute):
    """Requesting clients drop their forget-class samples and retrain for R rounds.

    Only they train (from the current global model); every other client contributes
    its cached final model from the original run to each round's FedAvg.
    Train messages carry the global model and ``exclude-classes``; replies carry the
    local model and its sample count.
    """

    name = "delete-retrain"
    fair = True
    relabel = False
