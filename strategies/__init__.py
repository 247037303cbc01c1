"""Unlearning methods: one module each, registered with ``fedunl_flwr.methods.register_method``.

Importing the package imports every module in it, so a new method's module registers
itself by being here; nothing else lists it.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module

from fedunl_flwr.methods import TRAIN_ONLY, get_method

for _module in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")


def get_strategy(name: str):
    """The strategy class of method ``name`` (None for ``fedavg``: train and evaluate only)."""
    return None if name == TRAIN_ONLY else get_method(name).strategy
