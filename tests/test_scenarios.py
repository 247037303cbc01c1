"""Scenarios on the real offline data: client groups, domains, shared classes."""

from __future__ import annotations

import numpy as np
import pytest

from fedunl_flwr.data.scenarios import build_federated_data, get_scenario, load_client_file
from fedunl_flwr.data.sources import DatasetNotFoundError
from fedunl_flwr.data.tensors import images_to_tensor


def test_digits_offline_has_three_domain_groups_at_native_resolution(data_dir):
    fed = build_federated_data("digits-real-noniid-offline", 0, 0.5, 200, 50, 0, str(data_dir))
    assert [c.domain for c in fed.clients] == ["mnist"] * 3 + ["uci-digits"] * 3 + ["usps"] * 3
    assert [c.x_train.shape[1:] for c in fed.clients] == [(28, 28)] * 3 + [(8, 8)] * 3 + \
        [(16, 16)] * 3
    assert fed.num_classes == 10
    assert all(len(c.y_train) <= 200 and len(c.y_test) <= 50 for c in fed.clients)
    assert get_scenario("digits-real-noniid-offline").in_channels == 1


def test_clients_of_a_group_do_not_share_samples(data_dir):
    fed = build_federated_data("digits-real-noniid-offline", 0, 0.5, 0, 0, 0, str(data_dir))
    mnist = [c for c in fed.clients if c.domain == "mnist"]
    sizes = sum(len(c.y_train) for c in mnist)
    assert sizes == 60000  # the three MNIST clients split the whole train set
    flat = np.concatenate([c.x_train.reshape(len(c.x_train), -1)[:50] for c in mnist])
    assert len(np.unique(flat, axis=0)) == len(flat)


def test_partition_is_seeded(data_dir):
    a = build_federated_data("cifar10-dir0.3", 5, 0.5, 100, 20, 1, str(data_dir))
    b = build_federated_data.__wrapped__("cifar10-dir0.3", 5, 0.5, 100, 20, 1, str(data_dir))
    c = build_federated_data("cifar10-dir0.3", 5, 0.5, 100, 20, 2, str(data_dir))
    assert all(np.array_equal(x.y_train, y.y_train)
               for x, y in zip(a.clients, b.clients, strict=True))
    assert not all(np.array_equal(x.y_train, y.y_train)
                   for x, y in zip(a.clients, c.clients, strict=True))
    assert len(a.clients) == 5


def test_images7_offline_keeps_the_seven_shared_classes(data_dir):
    fed = build_federated_data("images7-real-noniid-offline", 0, 0.5, 100, 30, 0, str(data_dir))
    assert fed.class_names == ("automobile", "bird", "cat", "dog", "frog", "ship", "truck")
    assert [c.x_train.shape[1:3] for c in fed.clients] == [(32, 32)] * 5 + [(64, 64)] * 5
    assert all(c.y_train.max() < 7 for c in fed.clients)


def test_single_dataset_scenarios_take_any_client_count(data_dir):
    fed = build_federated_data("mnist-iid", 50, 0.5, 20, 10, 0, str(data_dir))
    assert len(fed.clients) == 50
    assert get_scenario("cifar10-dir").num_clients(20) == 20
    assert get_scenario("cifar10-dir0.1").alpha == 0.1


@pytest.mark.parametrize("name", ["nope", "cifar10-iid0.5", "imagenet-iid", "mnist-dir0"])
def test_unknown_scenarios_are_rejected(name):
    with pytest.raises(ValueError, match="scenario"):
        get_scenario(name)


def test_missing_dataset_names_dataset_and_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        build_federated_data("digits-real-noniid", 0, 0.5, 10, 10, 0, str(tmp_path))
    assert "mnist" in str(err.value) and str(tmp_path) in str(err.value)


def test_images_to_tensor_converts_gray_and_rgb():
    gray = np.full((2, 8, 8), 255, np.uint8)
    rgb = np.zeros((2, 4, 4, 3), np.uint8)
    assert images_to_tensor(gray, 3).shape == (2, 3, 8, 8)
    assert float(images_to_tensor(gray, 1).max()) == 1.0
    assert images_to_tensor(rgb, 1).shape == (2, 1, 4, 4)
    assert float(images_to_tensor(rgb, 3).min()) == -1.0


def test_client_data_file_for_real_supernodes(tmp_path):
    path = tmp_path / "site.npz"
    np.savez(path, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, 2, 1]),
             x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.array([1, 2]))
    data = load_client_file(path, 3)
    assert data.partition_id == 3 and data.y_train.dtype == np.int64
    np.savez(tmp_path / "bad.npz", x_train=np.zeros(1))
    with pytest.raises(ValueError, match="lacks"):
        load_client_file(tmp_path / "bad.npz", 0)
    with pytest.raises(FileNotFoundError, match="data-file"):
        load_client_file(tmp_path / "missing.npz", 0)


def test_data_fingerprint_changes_with_any_client_array() -> None:
    from fedunl_flwr.data.scenarios import ClientData
    from fedunl_flwr.federation import data_fingerprint, with_data

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (6, 4, 4), dtype=np.uint8), np.arange(6) % 3
    base = ClientData(0, "d", x, y, x[:2], y[:2])
    changed = y.copy()
    changed[5] = 0  # one label differs
    assert ClientData(0, "d", x.copy(), y.copy(), x[:2], y[:2]).fingerprint == base.fingerprint
    assert ClientData(0, "d", x, changed, x[:2], y[:2]).fingerprint != base.fingerprint
    assert ClientData(0, "d", x, y, x[:1], y[:1]).fingerprint != base.fingerprint
    prints = {0: "a", 1: "b"}
    assert data_fingerprint(prints) == data_fingerprint({1: "b", 0: "a"})
    assert data_fingerprint(prints) != data_fingerprint({0: "a", 1: "c"})
    assert with_data({"seed": 0}, "f") == {"seed": 0, "data": "f"}


def test_real_partition_tests_every_trained_class_and_trains_on_the_same_split(data_dir):
    plain = build_federated_data("digits-real-noniid-offline", 0, 0.5, 200, 30, 0,
                                 str(data_dir))
    topped = build_federated_data("digits-real-noniid-offline", 0, 0.5, 200, 30, 0,
                                  str(data_dir), False, 10)
    thin = 0
    for a, b in zip(plain.clients, topped.clients, strict=True):
        np.testing.assert_array_equal(a.y_train, b.y_train)
        held = np.unique(b.y_train)
        thin += int(np.sum(np.bincount(a.y_test, minlength=10)[held] < 10))
        assert np.all(np.bincount(b.y_test, minlength=10)[held] >= 10)
    assert thin > 0  # the cap alone left some trained class thinly tested
