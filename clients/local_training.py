"""Local training loop shared by the clients and the plain-PyTorch benchmark."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TrainSettings:
    """Local optimisation settings (from run-config)."""

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    epochs: int = 1
    batch_size: int = 32
    augment: bool = False
    momentum: float = 0.9  # SGD only


def random_crop_flip(images: torch.Tensor, generator: torch.Generator,
                     padding: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation: zero-pad by ``padding``, crop back at a random
    offset, flip horizontally with probability 1/2 (each image independently)."""
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(images)
    for i in range(n):
        top, left = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, top:top + height, left:left + width]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def make_optimizer(model: nn.Module, settings: TrainSettings,
                   extra: Sequence[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """Adam or SGD (momentum ``settings.momentum``, default 0.9) over the model's parameters
    and ``extra`` ones (e.g. FedAU's auxiliary head)."""
    parameters = [*model.parameters(), *extra]
    if settings.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=settings.learning_rate)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=settings.learning_rate,
                               momentum=settings.momentum)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}; use 'adam' or 'sgd'")


def training_batches(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                     settings: TrainSettings, generator: torch.Generator
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``settings.epochs`` seeded passes of ``(positions, inputs, labels)`` mini-batches on
    the model's device (augmented when ``settings.augment``; a trailing batch of one is
    skipped: BatchNorm cannot train on a single sample)."""
    device = next(model.parameters()).device
    for _ in range(settings.epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            if len(batch) < 2 and len(order) > 1:
                continue
            x = inputs[batch]
            if settings.augment:
                x = random_crop_flip(x, generator)
            yield batch, x.to(device), labels[batch].to(device)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (the training loss)."""
    return F.cross_entropy(logits, labels, reduction="none")


def train_epochs(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                 settings: TrainSettings, generator: torch.Generator,
                 sample_loss_sums: np.ndarray | None = None,
                 sample_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy,
                 extra_parameters: Sequence[nn.Parameter] = ()) -> float:
    """Train ``model`` in place for ``settings.epochs`` epochs; return the mean loss.

    Parameters
    ----------
    sample_loss_sums : np.ndarray, optional
        If given (one entry per sample), each sample's loss of every step is added
        to it: the cumulative sample loss (CSL) memorisation proxy.
    sample_loss : callable
        ``(logits, labels) -> per-sample losses`` minimised (default cross-entropy);
        ``labels`` are the rows of ``labels`` in the batch (any shape).
    extra_parameters : sequence of parameters
        Trained alongside the model's (``sample_loss`` uses them).
    """
    optimizer = make_optimizer(model, settings, extra_parameters)
    model.train()
    total, count = 0.0, 0
    for batch, x, y in training_batches(model, inputs, labels, settings, generator):
        losses = sample_loss(model(x), y)
        loss = losses.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
        count += len(batch)
        if sample_loss_sums is not None:
            np.add.at(sample_loss_sums, batch.numpy(), losses.detach().cpu().numpy())
    return total / max(1, count)


def mean_loss_gradient(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                       batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Gradient of the mean loss over the whole local data w.r.t. each parameter.

    The model is in eval mode (BatchNorm uses its running statistics) so the
    gradient is that of the model as it stands.
    """
    device = next(model.parameters()).device
    model.eval()
    model.zero_grad(set_to_none=True)
    for start in range(0, len(labels), batch_size):
        x = inputs[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        F.cross_entropy(model(x), y, reduction="sum").div(len(labels)).backward()
    grads = {name: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
             for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads
