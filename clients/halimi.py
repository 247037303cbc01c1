"""Client work of Halimi et al. (2022): projected gradient ascent on the leaving client's data.

``query.projected_ascent`` (sent to the client that leaves) carries the reference model
w_ref (the mean of the remaining clients' models) and, in its config, the ascent's
settings (:class:`fedunl_flwr.protocol.AscentSettings`) and the client's forget data
(a real SuperNode answers only for its own ``forget-request``). The client starts from
w_ref, maximises its cross-entropy loss on its own training data with SGD, projects the
model back onto the l2 ball of radius ``radius`` around w_ref after every step, and stops
early once its accuracy on that data is at or below ``stop-accuracy`` (checked on the
whole data after every epoch, and whenever a batch's accuracy before its step is at or
below it). It replies with the model and how far it went. Only the leaving client's own
update leaves it, as in any training round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clients.handlers import QueryPolicy, QueryReply, query_handler
from fedunl_flwr import protocol
from fedunl_flwr.metrics.evaluation import evaluate_model
from fedunl_flwr.protocol import AscentReply, AscentSettings
from fedunl_flwr.records import model_to_record, set_weights
from fedunl_flwr.seeding import torch_generator

ACTION = protocol.PROJECTED_ASCENT


def project_to_ball(params: Sequence[torch.Tensor], center: Sequence[torch.Tensor],
                    radius: float) -> float:
    """Move ``params`` (in place) onto the l2 ball of ``radius`` around ``center``.

    The distance is over all tensors together (one flat vector). Returns the distance
    after projection.
    """
    with torch.no_grad():
        distance = math.sqrt(sum(float((p - c).pow(2).sum())
                                 for p, c in zip(params, center, strict=True)))
        if distance <= radius or distance == 0.0:
            return distance
        scale = radius / distance
        for p, c in zip(params, center, strict=True):
            p.copy_(c + (p - c) * scale)
    return radius


def projected_gradient_ascent(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                              settings: AscentSettings, generator: torch.Generator,
                              num_classes: int) -> dict[str, float]:
    """Halimi et al.'s local unlearning: SGD ascent on the loss, projected onto the ball
    around the model's starting point (the reference model), early-stopped by accuracy.

    Returns the epochs run, the steps taken, the final accuracy on ``(inputs, labels)``
    and the final distance from the start.
    """
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    center = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=settings.learning_rate, momentum=settings.momentum)
    accuracy = evaluate_model(model, inputs, labels, num_classes).accuracy
    steps, epochs, distance = 0, 0, 0.0
    while epochs < settings.epochs and accuracy > settings.stop_accuracy:
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            if len(batch) < 2 and len(order) > 1:
                continue  # BatchNorm cannot train on a single sample
            x, y = inputs[batch].to(device), labels[batch].to(device)
            logits = model(x)
            if float((logits.argmax(1) == y).float().mean()) <= settings.stop_accuracy:
                # this batch is forgotten: check the whole data (only then, it costs a pass)
                accuracy = evaluate_model(model, inputs, labels, num_classes).accuracy
                if accuracy <= settings.stop_accuracy:
                    return {"epochs": epochs, "steps": steps, "accuracy": accuracy,
                            "distance": distance}
                model.train()
            loss = -F.cross_entropy(logits, y)  # ascent: minimise the negative loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, settings.clip_norm)
            optimizer.step()
            distance = project_to_ball(params, center, settings.radius)
            steps += 1
        epochs += 1
        accuracy = evaluate_model(model, inputs, labels, num_classes).accuracy
    return {"epochs": epochs, "steps": steps, "accuracy": accuracy, "distance": distance}


@query_handler(ACTION, QueryPolicy(forget_data=True))
def projected_ascent(client, weights: list[np.ndarray] | None, config: dict) -> QueryReply:
    """Run the ascent from the received reference model on this client's forget data."""
    if weights is None:
        raise ValueError(f"query {ACTION!r} needs the reference model in 'arrays'")
    settings = AscentSettings.from_config(config)
    set_weights(client.model, weights)
    positions = torch.as_tensor(client.forget_positions(config), dtype=torch.long)
    if len(positions) == 0:
        raise ValueError(f"query {ACTION!r}: client {client.partition_id} has no forget data")
    generator = torch_generator(client.config.seed, "data-order", client.partition_id,
                                str(config.get(protocol.PHASE, ACTION)), 0)
    result = projected_gradient_ascent(client.model, client.x_train[positions],
                                       client.y_train[positions], settings, generator,
                                       client.num_classes)
    return AscentReply(client.partition_id, model_to_record(client.model),
                       float(result["accuracy"]), float(result["distance"]),
                       int(result["epochs"]), int(result["steps"]), len(positions))
