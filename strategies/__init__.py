"""Unlearning methods: one module each, registered with ``fedunl_flwr.methods.register_method``.

Importing the package imports every module in it, so a new method's module registers
itself by being here; nothing else lists it.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module

from fedunl_flwr.methods import TRAIN_ONLY, get_method
from strategies.unlearning import UnlearningMethod

for _module in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")


def get_unlearning_method(name: str) -> UnlearningMethod | None:
    """The method object registered as ``name`` (None for ``fedavg``: train and evaluate
    only)."""
    if name == TRAIN_ONLY:
        return None
    method = get_method(name).implementation
    if not isinstance(method, UnlearningMethod):
        raise TypeError(f"method {name!r} is a {type(method).__name__}, not an UnlearningMethod")
    return method
