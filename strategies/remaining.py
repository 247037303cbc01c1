"""FedAvg over the remaining data of an unlearning request (a Flower ``Strategy``).

Retraining, fine-tuning and the seed 001 methods built on it train with this strategy
(or a subclass that overrides one hook, as FedMemEraser's reset does).
"""

from __future__ import annotations

from fedunl_flwr.fedavg_train import FedAvgTrain
from fedunl_flwr.federation import Federation
from strategies.unlearning import UnlearningRequest, remaining_participants


class RemainingDataFedAvg(FedAvgTrain):
    """FedAvg on the remaining data D_r (eq. 14; Alg. 1 stage 3; retraining).

    Participants are the remaining clients with data left; each train message carries
    that client's removal settings (``UnlearningRequest.removal``: drop the forget
    classes or samples), so class- and sample-level requests train without D_u. The
    server averages as run-config ``aggregation`` says (as in the original training).

    Parameters
    ----------
    federation, request
        Connected clients and the validated request.
    num_rounds, fraction_train, evaluate_every, seed, phase, aggregation, fraction_evaluate
        As in :class:`FedAvgTrain`.
    """

    def __init__(self, federation: Federation, request: UnlearningRequest, num_rounds: int,
                 fraction_train: float = 1.0, evaluate_every: int = 1, seed: int = 0,
                 phase: str = "unlearn", aggregation: str = "weighted",
                 fraction_evaluate: float = 1.0) -> None:
        super().__init__(federation, remaining_participants(request, federation), num_rounds,
                         fraction_train=fraction_train, evaluate_every=evaluate_every,
                         seed=seed, phase=phase, aggregation=aggregation,
                         fraction_evaluate=fraction_evaluate,
                         client_config=lambda pid: request.removal(pid).encode())
        self.request = request
