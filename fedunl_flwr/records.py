"""Conversions between models, NumPy weight lists and Flower ArrayRecords."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from torch import nn


def state_keys(model: nn.Module) -> list[str]:
    """State-dict entries exchanged with the server (BatchNorm step counters excluded)."""
    return [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's exchanged state as NumPy arrays, in ``state_keys`` order."""
    state = model.state_dict()
    return [state[k].detach().cpu().numpy().copy() for k in state_keys(model)]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Load NumPy arrays (``state_keys`` order) into the model; shapes must match."""
    keys = state_keys(model)
    if len(keys) != len(weights):
        raise ValueError(f"model has {len(keys)} state entries, got {len(weights)} arrays")
    state = model.state_dict()
    for key, value in zip(keys, weights):
        if tuple(state[key].shape) != tuple(np.shape(value)):
            raise ValueError(f"shape mismatch for {key}: model {tuple(state[key].shape)}, "
                             f"arrays {tuple(np.shape(value))}")
        state[key] = torch.as_tensor(np.asarray(value), dtype=state[key].dtype)
    model.load_state_dict(state, strict=False)


def weights_to_record(keys: Sequence[str], weights: Sequence[np.ndarray]) -> ArrayRecord:
    """Named ArrayRecord (so server-side code can address tensors by name)."""
    return arrays_to_record(dict(zip(keys, weights)))


def arrays_to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """A ``name -> array`` mapping as an ArrayRecord (insertion order kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(w)) for k, w in arrays.items()})


def model_to_record(model: nn.Module) -> ArrayRecord:
    """The model's exchanged state (``state_keys``) through Flower's state-dict path."""
    state = model.state_dict()
    return ArrayRecord({k: state[k] for k in state_keys(model)})


def record_to_weights(record: ArrayRecord) -> list[np.ndarray]:
    """The record's arrays in insertion order."""
    return record.to_numpy_ndarrays()


def record_to_dict(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The record as an ordered ``name -> array`` dict."""
    return {k: v.numpy() for k, v in record.items()}
