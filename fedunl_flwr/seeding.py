"""Named random streams: every stream is derived from (seed, purpose, index)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

#: The purposes the app draws randomness for; a new purpose must be added here so that two
#: parts of the code never share a stream by accident.
PURPOSES: tuple[str, ...] = (
    "partition",         # which samples each client holds (no index; see LEGACY_STREAMS)
    "init",              # model initialisation: index 0 = original, 1 + j = retrained model j
    "data-order",        # local shuffling: (client, phase, round)
    "sampling",          # participant sampling per phase
    "evaluate-sampling", # which clients evaluate a round (fraction-evaluate) per phase
    "reset",             # FedMemEraser's re-drawn entries
    "relabel",           # Relabel-Poison's random labels: (client,)
    "attribution",       # which samples a client attributes: (client,)
    "augment",           # data augmentation: (client, phase, round)
    "test-top-up",       # extra test samples of a client's thinly tested classes
    "noise",             # a method's added noise: (method,), e.g. FedRecovery's Gaussian
    "backdoor",          # which training samples carry the planted trigger: (client,)
    "mia",               # membership inference: test-set halves, attack subsamples
)

#: Streams whose generator is seeded with ``seed`` itself rather than the SHA-256 of the
#: tuple: the partition was drawn this way before streams were named, and keeping it keeps
#: every documented partition (and the tables measured on it) reproducible. Distinct from
#: the hashed streams (a 63-bit hash equal to a user's seed is a 2^-63 event).
LEGACY_STREAMS: frozenset[str] = frozenset({"partition"})


def stream_seed(seed: int, purpose: str, *index: int | str) -> int:
    """A 63-bit seed for the stream ``(seed, purpose, *index)``.

    Distinct purposes or indices give unrelated streams (SHA-256 of the tuple), so the
    original model and retrained model j never share initial weights or data order.

    Parameters
    ----------
    seed : int
        The run-config ``seed``.
    purpose : str
        One of :data:`PURPOSES`.
    *index : int | str
        What distinguishes streams of one purpose (client, round, phase name, ...).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random stream purpose {purpose!r}; add it to PURPOSES")
    if purpose in LEGACY_STREAMS:
        if index:
            raise ValueError(f"stream {purpose!r} takes no index")
        return int(seed)
    text = "/".join(str(part) for part in (int(seed), purpose, *index))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def torch_generator(seed: int, purpose: str, *index: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` on the stream ``(seed, purpose, *index)``."""
    return torch.Generator().manual_seed(stream_seed(seed, purpose, *index))


def numpy_generator(seed: int, purpose: str, *index: int | str) -> np.random.Generator:
    """A NumPy ``Generator`` on the stream ``(seed, purpose, *index)``."""
    return np.random.default_rng(stream_seed(seed, purpose, *index))
