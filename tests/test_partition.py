"""Partitioners: counts, seeds, no overlap, the test split's top-up."""

from __future__ import annotations

import numpy as np
import pytest

from fedunl_flwr.data.partition import (
    cap_indices,
    dirichlet_partition,
    iid_partition,
    split_by_proportions,
    top_up_test,
)


def test_iid_partition_covers_every_sample_once_with_near_equal_sizes():
    parts = iid_partition(103, 10, np.random.default_rng(0))
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(103))
    assert {len(p) for p in parts} == {10, 11}


def test_iid_partition_may_leave_test_parts_empty_when_asked():
    parts = iid_partition(2, 3, np.random.default_rng(0), allow_empty=True)
    assert sorted(np.concatenate(parts).tolist()) == [0, 1]
    assert sorted(len(p) for p in parts) == [0, 1, 1]


def test_iid_partition_is_seeded():
    a = iid_partition(50, 5, np.random.default_rng(3))
    b = iid_partition(50, 5, np.random.default_rng(3))
    c = iid_partition(50, 5, np.random.default_rng(4))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_split_by_proportions_follows_the_shares_exactly():
    labels = np.array([0] * 10 + [1] * 20)
    shares = np.array([[1.0, 0.0], [0.25, 0.75]])
    parts = split_by_proportions(labels, shares, np.random.default_rng(0))
    assert np.bincount(labels[parts[0]], minlength=2).tolist() == [10, 5]
    assert np.bincount(labels[parts[1]], minlength=2).tolist() == [0, 15]


def test_dirichlet_partition_no_overlap_full_cover_and_skew():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 10, 5000)
    test = rng.integers(0, 10, 1000)
    train_parts, test_parts = dirichlet_partition(train, test, 10, 0.1, 10,
                                                  np.random.default_rng(1))
    for parts, labels in ((train_parts, train), (test_parts, test)):
        joined = np.concatenate(parts)
        assert len(joined) == len(set(joined.tolist())) == len(labels)
    assert min(len(p) for p in train_parts) >= 10
    # small alpha: clients are dominated by few classes
    top_share = [np.bincount(train[p], minlength=10).max() / len(p) for p in train_parts]
    assert np.mean(top_share) > 0.4
    # test split follows the same per-client label shares as the train split
    for tr, te in zip(train_parts, test_parts, strict=True):
        ptr = np.bincount(train[tr], minlength=10) / len(tr)
        pte = np.bincount(test[te], minlength=10) / max(1, len(te))
        assert np.abs(ptr - pte).sum() < 0.5


def test_dirichlet_large_alpha_is_near_uniform_and_seeded():
    labels = np.repeat(np.arange(10), 500)
    a, _ = dirichlet_partition(labels, labels, 5, 1000.0, 10, np.random.default_rng(2))
    b, _ = dirichlet_partition(labels, labels, 5, 1000.0, 10, np.random.default_rng(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(abs(len(p) - 1000) < 60 for p in a)


def test_bad_partition_arguments():
    with pytest.raises(ValueError, match="alpha must be > 0"):
        dirichlet_partition(np.zeros(10, int), np.zeros(5, int), 2, 0.0, 1,
                            np.random.default_rng(0))
    with pytest.raises(ValueError, match="3 clients but only 2 samples"):
        iid_partition(2, 3, np.random.default_rng(0))


def test_cap_indices_subsamples_without_replacement():
    idx = np.arange(100, 200)
    capped = cap_indices(idx, 30, np.random.default_rng(0))
    assert len(capped) == 30 and len(set(capped.tolist())) == 30
    assert set(capped.tolist()) <= set(idx.tolist())
    assert cap_indices(idx, 0, np.random.default_rng(0)) is idx


def test_top_up_gives_every_held_class_the_minimum_and_keeps_the_split() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    test_idx = np.array([0, 5])  # one sample of class 0, one of class 2, none of class 1
    topped = top_up_test(test_idx, np.array([0, 1, 1]), labels, 2,
                         np.random.default_rng(0))
    assert set(test_idx) <= set(topped) and len(set(topped)) == len(topped)
    counts = np.bincount(labels[topped], minlength=3)
    assert counts[0] == 2 and counts[1] == 2  # held classes reach the minimum
    assert counts[2] == 1  # not held: untouched
    short = top_up_test(np.array([], dtype=np.int64), np.array([1]), labels, 5,
                        np.random.default_rng(0))
    assert sorted(short) == [3, 4]  # as many as there are

