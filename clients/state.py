"""What the work mixins of the client read of ``BaseClient``, declared once.

``FairUnlearningWork`` and ``MemorizationWork`` are mixed into ``FedunlClient`` beside
``BaseClient``, which sets these; the declarations exist for the type checker only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from fedunl_flwr.config import RunConfig
    from fedunl_flwr.data.scenarios import ClientData
    from fedunl_flwr.models import SiteModel


class ClientState:
    """The base client's data, model and settings (set by ``BaseClient.__init__``)."""

    config: RunConfig
    data: ClientData
    model: SiteModel
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    if TYPE_CHECKING:
        @property
        def partition_id(self) -> int: ...

        def training_set(self, config: dict) -> tuple[torch.Tensor, torch.Tensor]: ...
