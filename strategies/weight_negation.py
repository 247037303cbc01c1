"""NoT (Khalil et al., CVPR 2025), a seed 001 baseline: negate early layers' weights, then
fine-tune.

"NoT: Federated Unlearning via Weight Negation" (arXiv 2503.05657): multiplying a
layer's weights by -1 breaks the co-adaptation between that layer and the next, which
induces unlearning, while the negated model stays close to an optimum, so the remaining
clients recover quickly. The server negates the weight tensors of the first
``not-negated-layers`` conv/linear layers (in the model's order; biases and norm
parameters are kept, as in the public re-implementations, which negate the first conv
layer's weight), then the remaining clients fine-tune for ``unlearn-rounds``
(``strategies.finetune.fine_tune``). It needs neither the forget data nor stored
history, so no client does work of its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
from flwr.serverapp import Grid

from fedunl_flwr.config import ConfigError, RunConfig
from fedunl_flwr.federation import Federation
from fedunl_flwr.methods import Option, register_method
from fedunl_flwr.phases import model_for
from fedunl_flwr.records import from_record, to_record
from strategies.finetune import fine_tune
from strategies.memorization_eval import memorization_summary
from strategies.unlearning import (
    UnlearningMethod,
    UnlearningOutcome,
    UnlearningRequest,
    UnlearningRun,
)
from strategies.verification import verification_summary

NEGATED_LAYERS = Option("not-negated-layers", 1,
                        "NoT: negate the weights of this many first conv/linear layers",
                        lambda value: value >= 1, "must be >= 1")


def negate_layers(arrays: Mapping[str, np.ndarray], layer_weights: Sequence[str],
                  count: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """``arrays`` with the first ``count`` of ``layer_weights`` multiplied by -1.

    Returns the new arrays (the others shared, not copied) and the negated names.
    """
    negated = list(layer_weights[:count])
    return {name: -array if name in negated else array
            for name, array in arrays.items()}, negated


def layer_weights(config: RunConfig, num_classes: int) -> list[str]:
    """Names of the run's model's conv/linear weight tensors, input layer first."""
    return [name for name, tensor in model_for(config, num_classes).named_parameters()
            if tensor.dim() >= 2]


@register_method("not", label="NoT", order=66, scopes=("client", "class", "samples"), doc=(
                 "seed 001 baseline (NoT, Khalil et al. 2025): negate the weights of the "
                 "first `not-negated-layers` conv/linear layers, then the remaining "
                 "clients fine-tune for `unlearn-rounds`"),
                 options=(NEGATED_LAYERS,))
class WeightNegation(UnlearningMethod):
    """Layer-wise weight negation, then FedAvg fine-tuning on the remaining data."""

    evaluations = (memorization_summary, verification_summary)
    trains_on_remaining = True

    def validate(self, config: RunConfig, request: UnlearningRequest,
                 federation: Federation) -> None:
        count = config.option(NEGATED_LAYERS.key)
        layers = layer_weights(config, federation.num_classes)
        if count > len(layers):
            raise ConfigError(f"not-negated-layers is {count} but the model has "
                              f"{len(layers)} conv/linear layers")

    def unlearn(self, grid: Grid, run: UnlearningRun) -> UnlearningOutcome:
        start = time.perf_counter()
        arrays, negated = negate_layers(from_record(run.original.arrays),
                                        layer_weights(run.config, run.federation.num_classes),
                                        run.config.option(NEGATED_LAYERS.key))
        negated_seconds = time.perf_counter() - start
        tuned = fine_tune(grid, run, to_record(arrays), offset=negated_seconds)
        return UnlearningOutcome(tuned.arrays, tuned.history, tuned.client_epochs, {
            "unlearn_seconds": tuned.seconds, "unlearn_rounds": run.config.unlearn_rounds,
            "negated": negated})
