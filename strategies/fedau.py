"""FedAU (Gu, Xu, Zhang, Lin, Yu; IJCAI 2024, "Unlearning during Learning"): the clients
that may leave train an auxiliary head on random labels during the original training;
unlearning is then one linear operation on the classification layer.

A FedAU original is its own stored phase: its training record
:class:`AuxiliaryHeads` joins the training key (with the request it prepares for,
since the clients of the request train differently). In it, each client of the request
trains an auxiliary head W2 beside the model, on random labels for its forget samples
(``clients/fedau.py``; the whole client for a client-level request), and keeps W2. To
unlearn, the server asks those clients for W2 (``query.auxiliary_head``) and replaces the
global classifier W1 (weight and bias) by

    W1_new = α · W1 + (1 - α) · mean_u W2_u

with the paper's α (``fedau-alpha``, default 0.1). The backbone is unchanged and no
client trains. Client and sample scope.

Class scope follows the authors' ``ul_class`` mode (one class c, named clients): each
requesting client trains W2 towards c on every one of its samples, carried over from
round to round (it starts at zero, no restart mix), and unlearning subtracts it:

    W1_new = W1 - mean_u W2_u

so the logit of c falls by what the clients' features say about c. ``fedau-alpha`` and
``fedau-gamma`` do not apply there.

Differences from the authors' code (Liar-Mask/FedAU): its ``ul_samples_alpha`` is 1 - α
(the authors say so in their issue #2: its 0.9 is our 0.1); it gives the unlearning
clients a hard-coded aggregation weight of 0.1 (right only for 10 clients; we aggregate
as run-config ``aggregation`` says); it trains with SGD and weight decay 5e-4 (we use the
run's optimiser); it restarts W2 from ``(1 - γ) W1 + γ W2_prev`` only for client-level
and CIFAR-100 backdoor requests (we do it for every request, ``fedau-gamma``, default
0.5); and its class-level mode (W2 trained towards the forgotten class on every sample,
then subtracted) starts W2 from the layer's random initialisation where we start it at
zero.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from fedunl_flwr import protocol
from fedunl_flwr.aggregation import Arrays, weighted_mean
from fedunl_flwr.config import ConfigError, RunConfig, parse_int_list
from fedunl_flwr.federation import Federation, query_clients
from fedunl_flwr.methods import Option, register_method
from fedunl_flwr.phases import records_folder_of
from fedunl_flwr.protocol import AuxiliaryHeadReply, ForgetSelection
from fedunl_flwr.records import from_record, to_record
from strategies.memorization_eval import memorization_summary
from strategies.unlearning import (
    UnlearningMethod,
    UnlearningOutcome,
    UnlearningRequest,
    UnlearningRun,
    forget_holders,
    parse_forget_samples,
)
from strategies.verification import verification_summary

ALPHA = Option("fedau-alpha", 0.1,
               "FedAU: weight of the global classifier in α·W1 + (1-α)·mean W2 (the paper's "
               "α; the authors' code calls 1-α alpha)", lambda value: 0 <= value <= 1,
               "must be in [0, 1]")
GAMMA = Option("fedau-gamma", 0.5,
               "FedAU: each round the auxiliary head restarts from (1-γ)·W1 + γ·W2_prev",
               lambda value: 0 <= value <= 1, "must be in [0, 1]")
#: The record's folder; the clients write it (``clients/fedau.py``).
AUXILIARY_HEADS = "auxiliary-heads"
CLASSIFIER = ("classifier.weight", "classifier.bias")


# --- the math ------------------------------------------------------------------------------
def unlearned_classifier(global_arrays: Arrays, heads: Sequence[Mapping[str, np.ndarray]],
                         alpha: float) -> dict[str, np.ndarray]:
    """``α · W1 + (1 - α) · mean_u W2_u`` on the classifier's weight and bias; every other
    tensor as it is."""
    return _combine_classifier(global_arrays, heads, alpha, 1 - alpha)


def class_unlearned_classifier(global_arrays: Arrays,
                               heads: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Class scope: ``W1 - mean_u W2_u`` on the classifier's weight and bias."""
    return _combine_classifier(global_arrays, heads, 1.0, -1.0)


def _combine_classifier(global_arrays: Arrays, heads: Sequence[Mapping[str, np.ndarray]],
                        own: float, head: float) -> dict[str, np.ndarray]:
    """``own · W1 + head · mean_u W2_u`` on the classifier; the rest unchanged."""
    if not heads:
        raise ValueError("no auxiliary head to unlearn with")
    mean = weighted_mean(dict(enumerate(heads)), dict.fromkeys(range(len(heads)), 1.0),
                         ["weight", "bias"])
    out = dict(global_arrays)
    for name, part in zip(CLASSIFIER, ("weight", "bias"), strict=True):
        value = np.asarray(global_arrays[name])
        out[name] = (own * value.astype(np.float64) + head * mean[part]).astype(value.dtype)
    return out


# --- the training record ----------------------------------------------------------------------
@dataclass(frozen=True)
class AuxiliaryHeads:
    """The auxiliary heads W2 of the clients of a request, trained by the clients in the
    original training (``gamma``: W2's restart mix). ``selections`` is what each client
    forgets; it joins the key, as the clients of the request train differently."""

    gamma: float
    selections: tuple[tuple[int, ForgetSelection], ...]

    @classmethod
    def for_request(cls, config: RunConfig) -> AuxiliaryHeads:
        """The spec of the run-config's client- or sample-level request."""
        gamma = float(config.option(GAMMA.key))
        if config.forget_scope == "client":
            clients = sorted(set(parse_int_list(config.forget_clients, "forget-clients")))
            return cls(gamma, tuple((c, ForgetSelection(everything=True)) for c in clients))
        if config.forget_scope == "class":
            clients = sorted(set(parse_int_list(config.forget_clients, "forget-clients")))
            classes = tuple(parse_int_list(config.forget_classes, "forget-classes"))
            return cls(gamma, tuple((c, ForgetSelection(classes=classes)) for c in clients))
        samples = parse_forget_samples(config.forget_samples)
        return cls(gamma, tuple((c, ForgetSelection(samples=tuple(sorted(ids))))
                                for c, ids in sorted(samples.items())))

    @property
    def folder(self) -> str:
        return AUXILIARY_HEADS

    def key(self) -> dict[str, Any]:
        return {"gamma": self.gamma,
                "clients": {str(c): s.encode() for c, s in self.selections}}

    def recorder(self, folder: Path) -> None:
        return None  # the clients write it

    def train_config(self, partition_id: int) -> dict[str, Any]:
        for client, selection in self.selections:
            if client == partition_id:
                return {protocol.AUXILIARY_GAMMA: self.gamma, **selection.encode()}
        return {}


# --- the method -----------------------------------------------------------------------------
@register_method("fedau", label="FedAU", order=64, scopes=("client", "class", "samples"),
                 doc=("FedAU (Gu et al. 2024): the clients of the request train an auxiliary "
                      "head on random labels during the original training; unlearning "
                      "replaces the classifier by α·W1 + (1-α)·mean W2 (`fedau-alpha`); for "
                      "one class, W2 learns that class and W1 - mean W2 removes it"),
                 options=(ALPHA, GAMMA))
class FedAU(UnlearningMethod):
    """One linear operation on the classification layer with the clients' auxiliary heads."""

    evaluations = (memorization_summary, verification_summary)
    trains_on_remaining = True

    def validate(self, config: RunConfig, request: UnlearningRequest,
                 federation: Federation) -> None:
        if request.scope == "class" and (len(request.classes) != 1
                                         or not config.forget_clients.strip()):
            raise ConfigError("fedau's class scope forgets one class (forget-classes) for the "
                              "clients named in forget-clients, which train the auxiliary "
                              f"head; got classes {list(request.classes)} and clients "
                              f"{config.forget_clients!r}")

    def training_records(self, config: RunConfig) -> tuple[AuxiliaryHeads, ...]:
        return (AuxiliaryHeads.for_request(config),)

    def unlearn(self, grid: Grid, run: UnlearningRun) -> UnlearningOutcome:
        start = time.perf_counter()
        holders = forget_holders(run.request, run.federation)
        folder = records_folder_of(run.run_store, run.original.store)
        replies = query_clients(grid, run.federation, holders, protocol.AUXILIARY_HEAD,
                                AuxiliaryHeadReply, None,
                                {p: {**run.request.forget_selection(p).encode(),
                                     protocol.RECORDS_TO: folder} for p in holders})
        heads = [from_record(replies[p].head) for p in holders]
        alpha = float(run.config.option(ALPHA.key))
        if run.request.scope == "class":
            arrays = class_unlearned_classifier(from_record(run.original.arrays), heads)
        else:
            arrays = unlearned_classifier(from_record(run.original.arrays), heads, alpha)
        return UnlearningOutcome(to_record(arrays), figures={
            "unlearn_seconds": time.perf_counter() - start,
            "alpha": None if run.request.scope == "class" else alpha,
            "heads_from": holders,
            "head_rounds": [replies[p].last_round for p in holders],
            "head_bytes": int(sum(v.nbytes for h in heads for v in h.values()))})
