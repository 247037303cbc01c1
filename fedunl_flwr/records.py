"""Conversions between models, Flower ArrayRecords and NumPy arrays, and typed reads of
the values in a client reply's records.

Three forms of a model's weights: the torch model, a ``NumPyClient``'s list in
``state_keys`` order (``get_weights`` / ``set_weights``; the client's local work) and a
``name -> array`` dict (server-side math), which is what a message's ArrayRecord carries
(``to_record`` / ``from_record``; ``set_weights`` takes the dict too, checking names)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from torch import nn


def state_keys(model: nn.Module) -> list[str]:
    """State-dict entries exchanged with the server (BatchNorm step counters excluded)."""
    return [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's exchanged state as NumPy arrays, in ``state_keys`` order (a
    ``NumPyClient``'s parameters)."""
    state = model.state_dict()
    return [state[k].detach().cpu().numpy().copy() for k in state_keys(model)]


def set_weights(model: nn.Module,
                weights: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> None:
    """Load arrays into the model: a list in ``state_keys`` order, or a ``name -> array``
    mapping (e.g. :func:`from_record`) whose names must be the model's; shapes must match."""
    keys = state_keys(model)
    if isinstance(weights, Mapping):
        if list(weights) != keys:
            raise ValueError(f"arrays {sorted(set(weights) ^ set(keys))[:5]} do not fit the "
                             "model's state entries" if set(weights) != set(keys) else
                             "arrays are not in the model's state order")
        weights = list(weights.values())
    if len(keys) != len(weights):
        raise ValueError(f"model has {len(keys)} state entries, got {len(weights)} arrays")
    state = model.state_dict()
    for key, value in zip(keys, weights, strict=True):
        if tuple(state[key].shape) != tuple(np.shape(value)):
            raise ValueError(f"shape mismatch for {key}: model {tuple(state[key].shape)}, "
                             f"arrays {tuple(np.shape(value))}")
        state[key] = torch.as_tensor(np.asarray(value), dtype=state[key].dtype)
    model.load_state_dict(state, strict=False)


def model_to_record(model: nn.Module) -> ArrayRecord:
    """The model's exchanged state (``state_keys``) through Flower's state-dict path."""
    state = model.state_dict()
    return ArrayRecord({k: state[k] for k in state_keys(model)})


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """A ``name -> array`` mapping as an ArrayRecord (insertion order kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(w)) for k, w in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The record as an ordered ``name -> array`` dict."""
    return {k: v.numpy() for k, v in record.items()}


def scalar(record: MetricRecord | ConfigRecord, key: str,
           default: int | float | str | None = None) -> int | float | str:
    """``record[key]`` (or ``default`` when given and the key is absent), checked to be one
    number or string rather than a list (``bool`` counts as a number)."""
    if default is not None and key not in record:
        return default
    value = record[key]
    if not isinstance(value, int | float | str):
        raise TypeError(f"record value {key!r} is a {type(value).__name__}, "
                        "expected a number or a string")
    return value


def number_list(record: MetricRecord, key: str) -> list[int] | list[float]:
    """``record[key]``, checked to be a list (of numbers: a MetricRecord holds no other)."""
    value = record[key]
    if not isinstance(value, list):
        raise TypeError(f"record value {key!r} is a {type(value).__name__}, expected a list")
    return value


def string_list(record: ConfigRecord, key: str) -> list[str]:
    """``record[key]``, checked to be a list of strings."""
    value = record[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"record value {key!r} is not a list of strings")
    return [str(v) for v in value]
