"""The NumPyClient that holds one client's data and does its local work."""

from __future__ import annotations

import numpy as np
import torch
from flwr.compat.client.numpy_client import NumPyClient

from clients.curvature import CURVATURE_OPTIMIZERS, train_curvature_epochs
from clients.fair_unlearning import FairUnlearningWork
from clients.fedau import fit_with_auxiliary_head
from clients.handlers import QUERIES, QueryReply, query_handler, query_policy
from clients.local_training import TrainSettings, train_epochs
from clients.memorization import MemorizationWork
from fedunl_flwr import protocol
from fedunl_flwr.config import RunConfig, parse_int_list
from fedunl_flwr.data.scenarios import ClientData
from fedunl_flwr.data.tensors import images_to_tensor, labels_to_tensor
from fedunl_flwr.metrics.evaluation import evaluate_model
from fedunl_flwr.metrics.verification import apply_trigger, backdoor_positions
from fedunl_flwr.models import SiteModel, build_model, get_device
from fedunl_flwr.protocol import DataChange, DescribeReply
from fedunl_flwr.records import get_weights, set_weights
from fedunl_flwr.seeding import torch_generator


class BaseClient(NumPyClient):
    """Local training and evaluation on one client's train and test splits.

    Parameters
    ----------
    data : ClientData
        The client's local data (never sent anywhere).
    config : RunConfig
        The run's configuration (training settings, model).
    model_name : str
        Model to build (scenario default already resolved).
    in_channels : int
        Model input channels.
    class_names : tuple[str, ...]
        The federation's label space.
    model : SiteModel, optional
        The model to work with (every message sets its weights first), e.g. one shared by
        the clients a process serves; default: a model of its own.
    """

    def __init__(self, data: ClientData, config: RunConfig, model_name: str,
                 in_channels: int, class_names: tuple[str, ...],
                 model: SiteModel | None = None) -> None:
        self.data = data
        self.config = config
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.device = get_device()
        self.model = model if model is not None else build_model(
            model_name, in_channels, self.num_classes, config.model_width,
            norm=config.model_norm).to(self.device)
        self.x_train = images_to_tensor(data.x_train, in_channels)
        self.y_train = labels_to_tensor(data.y_train)
        self.x_test = images_to_tensor(data.x_test, in_channels)
        self.y_test = labels_to_tensor(data.y_test)
        self.backdoor_positions = self._plant_backdoor()

    def _plant_backdoor(self) -> np.ndarray:
        """Write the trigger into this client's chosen training samples and relabel them to
        the target, when ``backdoor-clients`` names it (run-config; a verification aid:
        the backdoored original is its own stored phase). Returns their positions."""
        text = self.config.backdoor_clients.strip()
        if not text or self.partition_id not in parse_int_list(text, "backdoor-clients"):
            return np.zeros(0, dtype=np.int64)
        if not 0 <= self.config.backdoor_target < self.num_classes:
            raise ValueError(f"backdoor-target {self.config.backdoor_target} is not a class "
                             f"of this federation (0..{self.num_classes - 1})")
        positions = backdoor_positions(self.y_train, self.config.backdoor_fraction,
                                       self.config.backdoor_target,
                                       torch_generator(self.config.seed, "backdoor",
                                                       self.partition_id))
        index = torch.as_tensor(positions, dtype=torch.long)
        self.x_train[index] = apply_trigger(self.x_train[index])
        self.y_train = self.y_train.clone()  # it shares memory with the partition's array
        self.y_train[index] = self.config.backdoor_target
        return positions

    @classmethod
    def query_actions(cls) -> list[str]:
        """Every registered query action (``clients.handlers``)."""
        return sorted(QUERIES)

    def answer_query(self, action: str, weights: list[np.ndarray] | None,
                     config: dict) -> QueryReply:
        """Answer ``query.<action>`` with its registered handler."""
        query_policy(action)  # unknown actions are refused here
        return QUERIES[action].handler(self, weights, config)

    @property
    def partition_id(self) -> int:
        return self.data.partition_id

    def query_describe(self, weights: list[np.ndarray] | None, config: dict) -> QueryReply:
        """What the server may know of this client: sizes, label counts, class names."""
        # The labels it trains on (a planted backdoor relabels some).
        counts = np.bincount(self.y_train.numpy(), minlength=self.num_classes)
        return DescribeReply(self.partition_id, len(self.y_train), len(self.y_test),
                             tuple(int(c) for c in counts), self.data.domain,
                             tuple(self.class_names), self.data.fingerprint)

    def train_settings(self, config: dict) -> TrainSettings:
        """Run-config settings; a message may override ``local-epochs`` and the optimiser
        (``optimizer``, ``learning-rate``, ``momentum``: e.g. FedOSD's plain SGD)."""
        return TrainSettings(str(config.get(protocol.OPTIMIZER, self.config.optimizer)),
                             float(config.get(protocol.LEARNING_RATE,
                                              self.config.learning_rate)),
                             int(config.get(protocol.LOCAL_EPOCHS, self.config.local_epochs)),
                             self.config.batch_size, self.config.augment,
                             float(config.get(protocol.MOMENTUM, TrainSettings.momentum)))

    def generator(self, config: dict) -> torch.Generator:
        """Data-order stream of (client, phase, round), so runs are reproducible."""
        return torch_generator(self.config.seed, "data-order", self.partition_id,
                               config.get(protocol.PHASE, "train"),
                               config.get(protocol.SERVER_ROUND, 0))

    def training_set(self, config: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """This round's training samples.

        The message config's :class:`fedunl_flwr.protocol.DataChange` may drop classes,
        drop samples by position, or relabel classes to random other classes (seeded):
        the local work of retraining without the forgotten data, Delete-Retrain and
        Relabel-Poison.
        """
        change = DataChange.from_config(config)
        x, y = self.x_train, self.y_train.clone()
        keep = torch.ones(len(y), dtype=torch.bool)
        if change.exclude_classes:
            keep &= ~torch.isin(y, torch.tensor(change.exclude_classes))
        if change.exclude_samples:
            keep[list(change.exclude_samples)] = False
        if change.relabel_classes:
            y = relabel_to_other_classes(y, list(change.relabel_classes), self.num_classes,
                                         torch_generator(self.config.seed, "relabel",
                                                         self.partition_id))
        return x[keep], y[keep]

    def fit(self, parameters: list[np.ndarray], config: dict
            ) -> tuple[list[np.ndarray], int, dict]:
        set_weights(self.model, parameters)
        x, y = self.training_set(config)
        settings = self.train_settings(config)
        sample_losses = self.sample_loss_buffer(config, len(y))
        if protocol.AUXILIARY_GAMMA in config:  # FedAU's original training
            loss = fit_with_auxiliary_head(self, x, y, settings, self.generator(config),
                                           sample_losses, config)
        elif settings.optimizer in CURVATURE_OPTIMIZERS:  # Liu et al.'s rapid retraining
            loss = train_curvature_epochs(self.model, x, y, settings, self.generator(config))
        else:
            loss = train_epochs(self.model, x, y, settings, self.generator(config),
                                sample_losses)
        if sample_losses is not None:
            self.record_sample_losses(config, sample_losses)
        return get_weights(self.model), len(y), {"train-loss": loss,
                                                 protocol.LOCAL_EPOCHS: settings.epochs,
                                                 protocol.PARTITION_ID: self.partition_id}

    def sample_loss_buffer(self, config: dict, size: int) -> np.ndarray | None:
        """Hook: an array that ``fit`` adds each sample's per-step losses to (None = off)."""
        return None

    def record_sample_losses(self, config: dict, losses: np.ndarray) -> None:
        """Hook: called after a ``fit`` that accumulated per-sample losses (CSL)."""

    def evaluate(self, parameters: list[np.ndarray], config: dict
                 ) -> tuple[float, int, dict]:
        set_weights(self.model, parameters)
        result = evaluate_model(self.model, self.x_test, self.y_test, self.num_classes)
        return result.loss, result.num_examples, {
            "accuracy": result.accuracy,
            "loss-sum": result.loss_sum,
            protocol.PARTITION_ID: self.partition_id,
            "class-correct": result.class_correct.tolist(),
            "class-total": result.class_total.tolist(),
        }


query_handler(protocol.DESCRIBE)(BaseClient.query_describe)


def relabel_to_other_classes(labels: torch.Tensor, classes: list[int], num_classes: int,
                             generator: torch.Generator) -> torch.Tensor:
    """Give each sample of ``classes`` a uniformly random label outside ``classes``."""
    targets = torch.tensor([c for c in range(num_classes) if c not in set(classes)])
    if len(targets) == 0:
        raise ValueError("relabel-classes names every class: no other label is left")
    labels = labels.clone()
    chosen = torch.isin(labels, torch.tensor(classes))
    picks = torch.randint(0, len(targets), (int(chosen.sum()),), generator=generator)
    labels[chosen] = targets[picks]
    return labels


class FedunlClient(FairUnlearningWork, MemorizationWork, BaseClient):
    """The client used by the ClientApp: base work plus each method family's work."""
