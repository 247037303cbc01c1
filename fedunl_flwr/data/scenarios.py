"""Named scenarios: which datasets, how they are split across clients, which model."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedunl_flwr.data.partition import cap_indices, dirichlet_partition, iid_partition, top_up_test
from fedunl_flwr.data.sources import ImageDataset, load_dataset
from fedunl_flwr.seeding import numpy_generator

if TYPE_CHECKING:
    from fedunl_flwr.config import RunConfig

# Channels of each dataset's images, known without loading them.
DATASET_CHANNELS = {
    "mnist": 1, "usps": 1, "svhn": 3, "cifar10": 3, "cifar100": 3, "emnist": 1,
    "fashion-mnist": 1, "uci-digits": 1, "tinyimagenet-subset": 3,
    "tinyimagenet-cifar10": 3, "tinyimagenet-cifar100": 3,
    "imagenet-cifar10": 3, "imagenet-cifar100": 3,
}
SINGLE_DATASETS = ("mnist", "usps", "svhn", "cifar10", "cifar100", "emnist",
                   "fashion-mnist", "uci-digits", "tinyimagenet-subset")


@dataclass(frozen=True)
class DomainGroup:
    """Clients that hold one domain (dataset); ``num_clients=0`` takes ``num-clients``."""

    dataset: str
    num_clients: int = 0


@dataclass(frozen=True)
class Scenario:
    """A federation's data layout.

    Parameters
    ----------
    name : str
        Run-config name.
    groups : tuple[DomainGroup, ...]
        Client groups in partition-id order, one domain each.
    partitioner : str
        ``"iid"`` or ``"dirichlet"`` (inside each group).
    default_model : str
        Model used when run-config ``model`` is empty.
    description : str
        One line for the README and ``--help`` style listings.
    alpha : float | None
        Dirichlet alpha fixed by the name (``cifar10-dir0.1``); None takes run-config.
    """

    name: str
    groups: tuple[DomainGroup, ...]
    partitioner: str
    default_model: str
    description: str
    alpha: float | None = None

    @property
    def in_channels(self) -> int:
        """3 if any domain is RGB (gray images are then repeated), else 1."""
        return max(DATASET_CHANNELS[group.dataset] for group in self.groups)

    def num_clients(self, requested: int) -> int:
        """Total clients, given run-config ``num-clients`` (0 = default of 10)."""
        return sum(group.num_clients or requested or 10 for group in self.groups)


SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in (
        Scenario("digits-real-noniid",
                 (DomainGroup("mnist", 3), DomainGroup("svhn", 3), DomainGroup("usps", 3)),
                 "dirichlet", "cnn",
                 "seed 000 Table 3: MNIST C1-C3, SVHN C4-C6, USPS C7-C9 (SVHN downloads)"),
        Scenario("digits-real-noniid-offline",
                 (DomainGroup("mnist", 3), DomainGroup("uci-digits", 3),
                  DomainGroup("usps", 3)),
                 "dirichlet", "cnn",
                 "offline digits: MNIST C1-C3, UCI digits (8x8) C4-C6, USPS C7-C9"),
        Scenario("images9-real-noniid",
                 (DomainGroup("cifar10", 5), DomainGroup("imagenet-cifar10", 5)),
                 "dirichlet", "resnet18",
                 "seed 000: CIFAR-10 C1-C5 + ImageNet C6-C10 on their shared classes"),
        Scenario("images7-real-noniid-offline",
                 (DomainGroup("cifar10", 5), DomainGroup("tinyimagenet-cifar10", 5)),
                 "dirichlet", "resnet18",
                 "offline: CIFAR-10 C1-C5 + Tiny-ImageNet (64x64) C6-C10, 7 shared classes"),
        Scenario("images65-real-noniid",
                 (DomainGroup("cifar100", 5), DomainGroup("imagenet-cifar100", 5)),
                 "dirichlet", "resnet32",
                 "seed 000: CIFAR-100 C1-C5 + ImageNet C6-C10 on their shared classes"),
        Scenario("images39-real-noniid-offline",
                 (DomainGroup("cifar100", 5), DomainGroup("tinyimagenet-cifar100", 5)),
                 "dirichlet", "resnet32",
                 "CIFAR-100 C1-C5 + Tiny-ImageNet C6-C10 on 39 shared classes "
                 "(CIFAR-100 downloads)"),
    )
}
_SINGLE = re.compile(r"^(?P<dataset>[a-z0-9-]+?)-(?P<split>iid|dir)(?P<alpha>[0-9.]*)$")


def get_scenario(name: str) -> Scenario:
    """Look up a named scenario or build a single-dataset one (``cifar10-iid``,
    ``mnist-dir0.1``)."""
    if name in SCENARIOS:
        return SCENARIOS[name]
    match = _SINGLE.match(name)
    if match and match["dataset"] in SINGLE_DATASETS and (
        match["split"] == "dir" or not match["alpha"]
    ):
        try:
            alpha = float(match["alpha"]) if match["alpha"] else None
        except ValueError:
            raise ValueError(f"scenario {name!r}: {match['alpha']!r} is not a dirichlet alpha; "
                             f"write e.g. {match['dataset']}-dir0.5") from None
        if alpha is not None and alpha <= 0:
            raise ValueError(f"scenario {name!r}: dirichlet alpha must be > 0")
        partitioner = "iid" if match["split"] == "iid" else "dirichlet"
        default_model = "cnn" if DATASET_CHANNELS[match["dataset"]] == 1 else "resnet18"
        return Scenario(name, (DomainGroup(match["dataset"]),), partitioner, default_model,
                        f"{match['dataset']} split {partitioner}", alpha)
    raise ValueError(
        f"unknown scenario {name!r}; named scenarios: {', '.join(SCENARIOS)}; or "
        f"'<dataset>-iid' / '<dataset>-dir' / '<dataset>-dir<alpha>' with dataset in "
        f"{', '.join(SINGLE_DATASETS)}"
    )


@dataclass(frozen=True)
class ClientData:
    """One client's local data (train and test from its own domain)."""

    partition_id: int
    domain: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the four arrays (shapes, dtypes, bytes): different data, different hash."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class FederatedData:
    """All clients of a scenario plus the shared label space."""

    scenario: Scenario
    clients: tuple[ClientData, ...]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_domain(dataset: str, data_dir: Path, download: bool) -> ImageDataset:
    """Load one domain; ``tinyimagenet-<target>`` is the subset in CIFAR label space."""
    if dataset.startswith("tinyimagenet-cifar"):
        from fedunl_flwr.data.sources import load_tinyimagenet_shared

        return load_tinyimagenet_shared(data_dir, dataset.removeprefix("tinyimagenet-"))
    return load_dataset(dataset, data_dir, download=download)


def shared_classes(domains: list[ImageDataset]) -> list[int]:
    """The labels present in every domain's training set (the shared label space)."""
    return sorted(set.intersection(*(set(np.unique(d.y_train).tolist()) for d in domains)))


def _restrict(data: ImageDataset, keep: list[int]) -> tuple[np.ndarray, ...]:
    """Keep the shared classes and relabel them to ``0..len(keep)-1``."""
    relabel = np.full(max(data.num_classes, max(keep) + 1), -1, dtype=np.int64)
    relabel[keep] = np.arange(len(keep))
    train = np.isin(data.y_train, keep)
    test = np.isin(data.y_test, keep)
    return (data.x_train[train], relabel[data.y_train[train]],
            data.x_test[test], relabel[data.y_test[test]])


@lru_cache(maxsize=4)
def build_federated_data(scenario_name: str, num_clients: int, alpha: float,
                         samples_per_client: int, test_samples_per_client: int,
                         seed: int, data_dir: str, download: bool = False,
                         min_test_per_class: int = 0) -> FederatedData:
    """Partition a scenario's datasets across its clients (seeded, cached per process).

    Classes are the labels present in every domain (the shared label space of the
    cross-domain scenarios), relabelled to ``0..C-1``. After the cap, each client's test
    split is topped up to ``min_test_per_class`` samples of every class it trains on
    (``partition.top_up_test``, own random stream: the train splits do not change).
    """
    scenario = get_scenario(scenario_name)
    alpha = scenario.alpha or alpha
    domains = [load_domain(g.dataset, Path(data_dir), download) for g in scenario.groups]
    shared = shared_classes(domains)
    class_names = tuple(domains[0].class_names[c] for c in shared)
    rng = numpy_generator(seed, "partition")
    top_up_rng = numpy_generator(seed, "test-top-up")
    clients: list[ClientData] = []
    for group, domain in zip(scenario.groups, domains, strict=True):
        x_train, y_train, x_test, y_test = _restrict(domain, shared)
        count = group.num_clients or num_clients or 10
        if scenario.partitioner == "iid":
            train_parts = iid_partition(len(y_train), count, rng)
            # A test set smaller than the federation (50,000 clients, 10,000 test
            # images) leaves some clients without test data, as Dirichlet splits may.
            test_parts = iid_partition(len(y_test), count, rng, allow_empty=True)
        else:
            train_parts, test_parts = dirichlet_partition(
                y_train, y_test, count, alpha, len(shared), rng)
        for train_idx, test_idx in zip(train_parts, test_parts, strict=True):
            train_idx = cap_indices(train_idx, samples_per_client, rng)
            test_idx = cap_indices(test_idx, test_samples_per_client, rng)
            if min_test_per_class > 0:
                test_idx = top_up_test(test_idx, y_train[train_idx], y_test,
                                       min_test_per_class, top_up_rng)
            clients.append(ClientData(len(clients), group.dataset, x_train[train_idx],
                                      y_train[train_idx], x_test[test_idx],
                                      y_test[test_idx]))
    return FederatedData(scenario, tuple(clients), class_names)


def federated_data(config: RunConfig) -> FederatedData:
    """:func:`build_federated_data` with a ``RunConfig``'s settings."""
    return build_federated_data(config.scenario, config.num_clients, config.dirichlet_alpha,
                                config.samples_per_client, config.test_samples_per_client,
                                config.seed, str(config.resolved_data_dir()),
                                config.download, config.min_test_per_class)


def check_client_count(scenario_name: str, num_clients: int, data_dir: str,
                       download: bool = False) -> None:
    """Raise ``ValueError`` when a group of the scenario would have more clients than
    training samples (each client needs one): found before any client starts, instead
    of every virtual client failing while the server waits for them."""
    for group in get_scenario(scenario_name).groups:
        count = group.num_clients or num_clients or 10
        available = len(load_domain(group.dataset, Path(data_dir), download).y_train)
        if count > available:
            raise ValueError(f"{count} clients cannot share the {available} training samples "
                             f"of {group.dataset} (scenario {scenario_name}): lower "
                             "num-clients")


def check_datasets(scenario_name: str, data_dir: str, download: bool = False) -> None:
    """Raise ``DatasetNotFoundError`` (naming the dataset, the folder and how to get it)
    unless every dataset of the scenario can be read; with ``download``, datasets that
    torchvision can fetch are not checked (they are fetched when the run starts)."""
    from fedunl_flwr.data.sources import downloadable

    for dataset in dict.fromkeys(g.dataset for g in get_scenario(scenario_name).groups):
        base = "tinyimagenet-subset" if dataset.startswith("tinyimagenet-cifar") else dataset
        if download and downloadable(base):
            continue
        load_domain(dataset, Path(data_dir), False)


@lru_cache(maxsize=2)
def scenario_test_sets(scenario_name: str, data_dir: str, download: bool = False
                       ) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """Each domain's full, real test set on the scenario's shared classes (relabelled).

    The clients' test splits are capped, label-skewed samples of these; seed 001's "test
    accuracy" is measured on the real test set, which the server evaluates centrally.
    Returns ``(dataset name, x_test, y_test)`` per distinct domain.
    """
    scenario = get_scenario(scenario_name)
    datasets = list(dict.fromkeys(g.dataset for g in scenario.groups))
    domains = [load_domain(name, Path(data_dir), download) for name in datasets]
    shared = shared_classes(domains)
    sets = []
    for name, domain in zip(datasets, domains, strict=True):
        _, _, x_test, y_test = _restrict(domain, shared)
        sets.append((name, x_test, y_test))
    return tuple(sets)


def load_client_file(path: str | Path, partition_id: int) -> ClientData:
    """A real SuperNode's own data: an ``.npz`` with ``x_train, y_train, x_test, y_test``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"client data file {path} (node-config 'data-file') not found")
    with np.load(path, allow_pickle=False) as data:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(data.files)
        if missing:
            raise ValueError(f"client data file {path} lacks {sorted(missing)}")
        return ClientData(partition_id, str(data["domain"]) if "domain" in data.files
                          else path.stem, data["x_train"], data["y_train"].astype(np.int64),
                          data["x_test"], data["y_test"].astype(np.int64))
