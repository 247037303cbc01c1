"""Client work of the cross-domain fair unlearning routes (seed 000).

Two query actions, each answered from the global model the server sends:

``query.activations`` (Neuron-Zeroing)
    The client runs its training samples of each requested class through the model
    and returns, per class, the mean post-activation of every unit (one vector per
    neuron site) and how many samples the mean is over. Nothing per sample leaves
    the client.

``query.attribution`` (FedCCCU)
    The client computes the integrated-gradient attribution of every unit for every
    class it holds (seed 000 eq. 2-4; at most ``samples-per-class`` training samples
    per class, ``steps`` Riemann steps) and returns only its top-N
    ``(site, unit, score)`` entries per class, encoded by
    :func:`fedunl_flwr.protocol.encode_entries`.

Retraining with a deleted or relabelled class needs no extra code here: the train
message's config carries ``exclude-classes`` / ``relabel-classes`` and
``BaseClient.training_set`` applies them.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from clients.handlers import check_class_counts, query_handler
from clients.state import ClientState
from fedunl_flwr import protocol
from fedunl_flwr.protocol import (
    ActivationsReply,
    ActivationsRequest,
    AttributionReply,
    AttributionRequest,
)
from fedunl_flwr.records import set_weights
from fedunl_flwr.seeding import torch_generator
from fedunl_flwr.unlearning.neurons import (
    integrated_gradient_attribution,
    mean_activations,
    top_units_per_class,
)

# Rows (samples x steps) x pixels per attribution pass: 1024 rows of 32x32 images.
ATTRIBUTION_PIXEL_ROWS = 1024 * 32 * 32
def attribution_batch_size(sample_shape: tuple[int, ...], steps: int) -> int:
    """Samples per attribution pass: about 1024 rows of 32x32 per pass, fewer for big images."""
    pixels = int(np.prod(sample_shape[1:])) if len(sample_shape) > 1 else 1
    rows = max(1, ATTRIBUTION_PIXEL_ROWS // max(1, pixels))
    return max(1, rows // steps)


class FairUnlearningWork(ClientState):
    """Mixin for ``BaseClient``: activation statistics and attribution scores.

    Uses the base client's ``model``, ``x_train``, ``y_train``, ``config``,
    ``num_classes`` and ``partition_id``; the model runs on its device (CUDA when
    present) and the functions it calls move each batch there.
    """

    def query_activations(self, weights: list[np.ndarray] | None, config: dict
                          ) -> ActivationsReply:
        """Mean post-activation per unit over this client's samples of each class.

        Config: ``classes`` (e.g. ``"0"`` or ``"0,3"``). Returns the means by
        ``(class, site)`` (float64, one entry per unit) and, per asked class, the samples
        each mean is over (0 and no means for a class the client does not hold).
        """
        if weights is None:
            raise ValueError("query 'activations' needs the global model's arrays")
        set_weights(self.model, weights)
        classes = ActivationsRequest.from_config(config).classes
        check_class_counts(protocol.ACTIVATIONS, {c: int((self.y_train == c).sum())
                                                  for c in classes}, config)
        means: dict[tuple[int, str], np.ndarray] = {}
        counts = []
        for class_id in classes:
            mask = self.y_train == class_id
            counts.append(int(mask.sum()))
            if counts[-1] == 0:
                continue
            for site, values in mean_activations(self.model, self.x_train[mask]).items():
                means[(class_id, site)] = values
        return ActivationsReply(self.partition_id, tuple(classes), tuple(counts), means)

    def attribution_samples(self, per_class: int) -> torch.Tensor:
        """Positions of at most ``per_class`` training samples of each class (seeded)."""
        generator = torch_generator(self.config.seed, "attribution", self.partition_id)
        chosen = []
        for class_id in torch.unique(self.y_train).tolist():
            positions = torch.nonzero(self.y_train == class_id).flatten()
            if len(positions) > per_class:
                order = torch.randperm(len(positions), generator=generator)[:per_class]
                positions = positions[order.sort().values]
            chosen.append(positions)
        return torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)

    def query_attribution(self, weights: list[np.ndarray] | None, config: dict
                          ) -> AttributionReply:
        """FedCCCU: this client's top-N attributed units per class (eq. 2-4).

        Config: ``steps`` (m), ``top-n`` (N), ``samples-per-class`` (cap per
        class), optional ``classes`` (default: every class the client holds).
        Returns the entries (see :func:`fedunl_flwr.protocol.encode_entries`) plus
        ``num-samples``, ``class-samples`` (per scored class) and ``attribution-seconds``.
        """
        if weights is None:
            raise ValueError("query 'attribution' needs the global model's arrays")
        set_weights(self.model, weights)
        request = AttributionRequest.from_config(config)
        steps, top_n = request.steps, request.top_n
        positions = self.attribution_samples(request.samples_per_class)
        if request.classes:
            wanted = torch.tensor(request.classes)
            positions = positions[torch.isin(self.y_train[positions], wanted)]
        x, y = self.x_train[positions], self.y_train[positions]
        check_class_counts(protocol.ATTRIBUTION, dict(enumerate(
            torch.bincount(y, minlength=self.num_classes).tolist())), config)
        device = next(self.model.parameters()).device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        scores = integrated_gradient_attribution(
            self.model, x, y, steps, batch_size=attribution_batch_size(tuple(x.shape), steps))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        counts = torch.bincount(y, minlength=self.num_classes).tolist()
        return AttributionReply(self.partition_id, top_units_per_class(scores, top_n), len(y),
                                tuple(counts), seconds)


query_handler(protocol.ACTIVATIONS)(FairUnlearningWork.query_activations)
query_handler(protocol.ATTRIBUTION)(FairUnlearningWork.query_attribution)
