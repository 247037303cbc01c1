"""Client work of FedAU (Gu et al., IJCAI 2024): the auxiliary head trained during the
original training, and its query.

In the original training of a ``fedau`` run, a client whose train message carries
``auxiliary-gamma`` (the clients of the unlearning request) trains an auxiliary
classification head W2 (the shape of the model's ``classifier``) jointly with the model:
the loss is the model's cross-entropy on the true labels plus W2's cross-entropy on
labels y_B, where y_B is a fixed random other label for the samples the message's
forget selection names and the true label for the rest. Each round W2 restarts from
``(1 - gamma) W1 + gamma W2_prev`` (W1 the received classifier; the authors' code does
so for client-level requests, gamma = 0.5) and its result stays with the client, in
``records/auxiliary-heads/client-<k>.npz`` of the training phase (a client-side
training record, like CSL); only the model is uploaded. ``query.auxiliary_head`` hands
W2 to the server when the client asks to be forgotten.

For a class-level request (the message's forget selection names a class c) the auxiliary
labels are c on every sample and W2 carries over from round to round, starting at zero
(the authors' ``ul_class`` mode); the server then subtracts it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clients.handlers import QueryPolicy, QueryReply, query_handler
from clients.local_training import TrainSettings, train_epochs
from fedunl_flwr import protocol
from fedunl_flwr.protocol import AuxiliaryHeadReply, ForgetSelection
from fedunl_flwr.records import to_record
from fedunl_flwr.seeding import torch_generator
from fedunl_flwr.training_records import (
    client_record_path,
    read_client_record,
    write_client_record,
)

#: The record's folder (``records/<kind>/``) in the training phase.
AUXILIARY_HEADS = "auxiliary-heads"


def random_other_labels(labels: torch.Tensor, num_classes: int,
                        generator: torch.Generator) -> torch.Tensor:
    """A uniformly random label different from each true label."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + shift) % num_classes


def auxiliary_labels(labels: torch.Tensor, forget: torch.Tensor, num_classes: int,
                     generator: torch.Generator) -> torch.Tensor:
    """y_B: a random other label where ``forget`` is true, the true label elsewhere."""
    return torch.where(forget, random_other_labels(labels, num_classes, generator), labels)


def train_with_auxiliary_head(model: nn.Module, head: nn.Linear, inputs: torch.Tensor,
                              labels: torch.Tensor, auxiliary: torch.Tensor,
                              settings: TrainSettings, generator: torch.Generator,
                              sample_loss_sums: np.ndarray | None = None) -> float:
    """Train ``model`` and ``head`` jointly: CE(classifier(h), y) + CE(head(h), y_B), with h
    the input of ``model.classifier``; returns the mean loss."""
    classifier = model.get_submodule("classifier")
    features: list[torch.Tensor] = []
    hook = classifier.register_forward_hook(lambda _m, args, _out: features.append(args[0]))

    def loss(logits: torch.Tensor, both: torch.Tensor) -> torch.Tensor:
        h = features.pop()
        return (F.cross_entropy(logits, both[:, 0], reduction="none")
                + F.cross_entropy(head(h), both[:, 1], reduction="none"))

    try:
        return train_epochs(model, inputs, torch.stack([labels, auxiliary], dim=1), settings,
                            generator, sample_loss_sums, sample_loss=loss,
                            extra_parameters=list(head.parameters()))
    finally:
        hook.remove()


def initial_head(classifier: nn.Linear, previous: dict[str, np.ndarray] | None,
                 gamma: float) -> nn.Linear:
    """W2 for this round: ``(1 - gamma) W1 + gamma W2_prev`` (W1 alone in round 1)."""
    head = nn.Linear(classifier.in_features, classifier.out_features)
    head.to(classifier.weight.device)
    with torch.no_grad():
        for name in ("weight", "bias"):
            own = getattr(classifier, name).detach().clone()
            if previous is not None:
                old = torch.as_tensor(previous[name], dtype=own.dtype, device=own.device)
                own = (1 - gamma) * own + gamma * old
            getattr(head, name).copy_(own)
    return head


def carried_head(classifier: nn.Linear, previous: dict[str, np.ndarray] | None) -> nn.Linear:
    """Class scope's W2: the previous round's head, zero in round 1."""
    head = nn.Linear(classifier.in_features, classifier.out_features)
    head.to(classifier.weight.device)
    with torch.no_grad():
        for name in ("weight", "bias"):
            value = getattr(head, name)
            value.copy_(torch.zeros_like(value) if previous is None else
                        torch.as_tensor(previous[name], dtype=value.dtype))
    return head


def _read_head(path: Path) -> tuple[dict[str, np.ndarray], int] | None:
    stored = read_client_record(path, ("weight", "bias", "round"))
    if stored is None:
        return None
    return {"weight": stored["weight"], "bias": stored["bias"]}, int(stored["round"])


def fit_with_auxiliary_head(client, inputs: torch.Tensor, labels: torch.Tensor,
                            settings: TrainSettings, generator: torch.Generator,
                            sample_losses: np.ndarray | None, config: dict) -> float:
    """One round of the original training of a FedAU client (see the module docstring)."""
    folder = protocol.records_folder(config)
    if folder is None:
        raise ValueError(f"{protocol.AUXILIARY_GAMMA} needs the training phase's "
                         f"{protocol.RECORDS_TO}")
    gamma = float(config[protocol.AUXILIARY_GAMMA])
    server_round = int(config.get(protocol.SERVER_ROUND, 0))
    path = client_record_path(client.config.resolved_results_dir(), folder, AUXILIARY_HEADS,
                              client.partition_id)
    stored = _read_head(path)
    previous = stored[0] if stored is not None and server_round > 1 and \
        stored[1] < server_round else None
    classifier = client.model.get_submodule("classifier")
    selection = ForgetSelection.from_config(config)
    if selection.classes:  # class scope: W2 learns the class on every sample, carried over
        auxiliary = torch.full_like(labels, selection.classes[0])
        head = carried_head(classifier, previous)
    else:
        forget = torch.zeros(len(labels), dtype=torch.bool)
        forget[torch.as_tensor(client.forget_positions(config), dtype=torch.long)] = True
        auxiliary = auxiliary_labels(labels, forget, client.num_classes,
                                     torch_generator(client.config.seed, "relabel",
                                                     client.partition_id, "fedau"))
        head = initial_head(classifier, previous, gamma)
    loss = train_with_auxiliary_head(client.model, head, inputs, labels, auxiliary, settings,
                                     generator, sample_losses)
    write_client_record(path, {"weight": head.weight.detach().cpu().numpy(),
                               "bias": head.bias.detach().cpu().numpy(),
                               "round": np.asarray(server_round)})
    return loss


@query_handler(protocol.AUXILIARY_HEAD, QueryPolicy(forget_data=True))
def auxiliary_head(client, weights: list[np.ndarray] | None, config: dict) -> QueryReply:
    """The auxiliary head this client trained in the original named by ``records-to``."""
    folder = protocol.records_folder(config)
    if folder is None or not ForgetSelection.from_config(config):
        raise ValueError(f"query {protocol.AUXILIARY_HEAD!r} needs {protocol.RECORDS_TO} "
                         "and the client's forget selection")
    stored = _read_head(client_record_path(client.config.resolved_results_dir(), folder,
                                           AUXILIARY_HEADS, client.partition_id))
    if stored is None:
        raise ValueError(f"client {client.partition_id} holds no auxiliary head for {folder}: "
                         "its original was not trained for FedAU")
    head, last_round = stored
    return AuxiliaryHeadReply(client.partition_id, to_record(head), last_round)
