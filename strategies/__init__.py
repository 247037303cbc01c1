"""Unlearning strategies: the registry maps run-config ``strategy`` names to classes."""

from __future__ import annotations

from importlib import import_module

# name -> "module:Class"; "fedavg" trains and evaluates the original model only.
STRATEGIES: dict[str, str | None] = {
    "fedavg": None,
    "delete-retrain": "strategies.delete_retrain:DeleteRetrain",
    "relabel-poison": "strategies.relabel_poison:RelabelPoison",
    "delete-retrain-all": "strategies.delete_retrain_all:DeleteRetrainAll",
    "neuron-zeroing": "strategies.neuron_zeroing:NeuronZeroing",
    "fedcccu": "strategies.fedcccu:FedCCCU",
    "retrain": "strategies.retrain:Retrain",
    "finetune": "strategies.finetune:FineTune",
    "fedmemeraser": "strategies.fedmemeraser:FedMemEraser",
}


def get_strategy(name: str):
    """The unlearning strategy class for ``name`` (None for plain ``fedavg``)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    target = STRATEGIES[name]
    if target is None:
        return None
    module, cls = target.split(":")
    return getattr(import_module(module), cls)
