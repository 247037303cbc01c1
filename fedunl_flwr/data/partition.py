"""Seeded partitioners: IID and Dirichlet(alpha) by label, applied to train and test alike."""

from __future__ import annotations

import numpy as np


def iid_partition(num_samples: int, num_clients: int, rng: np.random.Generator, *,
                  allow_empty: bool = False) -> list[np.ndarray]:
    """Split ``range(num_samples)`` into ``num_clients`` shuffled, near-equal parts
    (with ``allow_empty``, more clients than samples leave the last parts empty)."""
    _check_clients(num_clients, num_clients if allow_empty else num_samples)
    return [np.sort(part) for part in np.array_split(rng.permutation(num_samples), num_clients)]


def dirichlet_proportions(num_classes: int, num_clients: int, alpha: float,
                          rng: np.random.Generator) -> np.ndarray:
    """Per-class client shares, shape ``(num_classes, num_clients)``, rows sum to 1."""
    if alpha <= 0:
        raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
    return rng.dirichlet(np.full(num_clients, alpha), size=num_classes)


def split_by_proportions(labels: np.ndarray, proportions: np.ndarray,
                         rng: np.random.Generator) -> list[np.ndarray]:
    """Give each client ``proportions[c, k]`` of the samples of class ``c``.

    Every sample goes to exactly one client; a class's samples are shuffled before
    being cut, so which samples a client gets is random but seeded.
    """
    num_classes, num_clients = proportions.shape
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == cls))
        cuts = (np.cumsum(proportions[cls])[:-1] * len(members)).round().astype(int)
        for client, chunk in enumerate(np.split(members, cuts)):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(chunks)).astype(np.int64) for chunks in parts]


def dirichlet_partition(train_labels: np.ndarray, test_labels: np.ndarray,
                        num_clients: int, alpha: float, num_classes: int,
                        rng: np.random.Generator, min_train_size: int = 10,
                        max_tries: int = 100) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Dirichlet(alpha) label split of a train set and, with the same shares, its test set.

    Shares are redrawn until every client holds at least ``min_train_size`` training
    samples (the usual guard against empty clients at small alpha).

    Returns
    -------
    tuple[list[np.ndarray], list[np.ndarray]]
        Per-client train indices and per-client test indices.
    """
    _check_clients(num_clients, len(train_labels))
    for _ in range(max_tries):
        shares = dirichlet_proportions(num_classes, num_clients, alpha, rng)
        train_parts = split_by_proportions(train_labels, shares, rng)
        if min(len(part) for part in train_parts) >= min_train_size:
            return train_parts, split_by_proportions(test_labels, shares, rng)
    raise ValueError(
        f"could not give every one of {num_clients} clients {min_train_size} samples with "
        f"dirichlet alpha={alpha} in {max_tries} draws; use fewer clients or a larger alpha"
    )


def cap_indices(indices: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded random subset of at most ``limit`` indices (0 = keep all)."""
    if limit <= 0 or len(indices) <= limit:
        return indices
    return np.sort(rng.choice(indices, size=limit, replace=False))


def top_up_test(test_idx: np.ndarray, held_classes: np.ndarray, test_labels: np.ndarray,
                minimum: int, rng: np.random.Generator) -> np.ndarray:
    """``test_idx`` topped up to at least ``minimum`` samples of every held class.

    A label-skewed, capped test split can hold 1 sample of a class the client trains on,
    and a per-client per-class accuracy cell then jumps 0% <-> 100%. For each class of
    ``held_classes`` with fewer than ``minimum`` samples in ``test_idx``, test samples of
    that class not yet in it are drawn at random (from the whole test set, so clients'
    test splits may then overlap) up to ``minimum``, or as many as there are.
    """
    chosen = [test_idx]
    for cls in np.unique(held_classes):
        have = int(np.sum(test_labels[test_idx] == cls))
        if have >= minimum:
            continue
        pool = np.setdiff1d(np.flatnonzero(test_labels == cls), test_idx)
        chosen.append(rng.choice(pool, size=min(minimum - have, len(pool)), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _check_clients(num_clients: int, num_samples: int) -> None:
    if num_clients < 1:
        raise ValueError(f"number of clients must be >= 1, got {num_clients}")
    if num_clients > num_samples:
        raise ValueError(f"{num_clients} clients but only {num_samples} samples")
