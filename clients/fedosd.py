"""Client work of FedOSD (Pan et al., AAAI 2025): the leaving client's local descent of the
unlearning cross-entropy on its own data.

``query.uce_descent`` (sent to the leaving client in FedOSD's unlearning rounds, while the
remaining clients get ordinary train messages) carries the global model and a train
config (epochs, plain SGD at the round's learning rate) plus the client's forget data (a
real SuperNode answers only for its own ``forget-request``). The client trains on that
data minimising the UCE loss and replies like a train message: its model, sample count
and mean loss. The server turns the models into pseudo-gradients.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from clients.handlers import QueryPolicy, QueryReply, query_handler
from clients.local_training import train_epochs
from fedunl_flwr import protocol
from fedunl_flwr.protocol import TrainReply
from fedunl_flwr.records import model_to_record, set_weights


def unlearning_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample UCE ``-log(1 - p_y / 2)`` (FedOSD eq. 4): in [0, log 2], smallest where
    the true label's probability p_y is 0, so it is *descended* (unlike the unbounded
    negated cross-entropy of gradient ascent)."""
    true = F.softmax(logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    return -torch.log1p(-true / 2)


@query_handler(protocol.UCE_DESCENT, QueryPolicy(forget_data=True))
def uce_descent(client, weights: list[np.ndarray] | None, config: dict) -> QueryReply:
    """Train from the received model on this client's forget data, minimising UCE."""
    if weights is None:
        raise ValueError(f"query {protocol.UCE_DESCENT!r} needs the global model in 'arrays'")
    set_weights(client.model, weights)
    positions = torch.as_tensor(client.forget_positions(config), dtype=torch.long)
    if len(positions) == 0:
        raise ValueError(f"query {protocol.UCE_DESCENT!r}: client {client.partition_id} has "
                         "no forget data")
    settings = client.train_settings(config)
    loss = train_epochs(client.model, client.x_train[positions], client.y_train[positions],
                        settings, client.generator(config),
                        sample_loss=unlearning_cross_entropy)
    return TrainReply(client.partition_id, model_to_record(client.model), len(positions),
                      loss, settings.epochs)
