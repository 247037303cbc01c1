"""Per-class evaluation of a model on local data (pure PyTorch, returns NumPy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Evaluation:
    """Sums over a dataset; per-class arrays have one entry per class."""

    loss_sum: float
    class_correct: np.ndarray
    class_total: np.ndarray

    @property
    def num_examples(self) -> int:
        return int(self.class_total.sum())

    @property
    def accuracy(self) -> float:
        return float(self.class_correct.sum() / max(1, self.num_examples))

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.num_examples)


@torch.no_grad()
def evaluate_model(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                   num_classes: int, batch_size: int = 256) -> Evaluation:
    """Loss and per-class correct/total counts of ``model`` on ``(inputs, labels)``."""
    device = next(model.parameters()).device
    model.eval()
    loss_sum = 0.0
    correct = torch.zeros(num_classes, dtype=torch.long)
    total = torch.zeros(num_classes, dtype=torch.long)
    for start in range(0, len(labels), batch_size):
        x = inputs[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        hits = (logits.argmax(dim=1) == y).long().cpu()
        y = y.cpu()
        total += torch.bincount(y, minlength=num_classes)
        correct += torch.bincount(y, weights=hits, minlength=num_classes).long()
    return Evaluation(loss_sum, correct.numpy(), total.numpy())


@torch.no_grad()
def per_sample_outputs(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                       batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per-sample true-label probability, correctness and loss."""
    device = next(model.parameters()).device
    model.eval()
    prob, correct, loss = [], [], []
    for start in range(0, len(labels), batch_size):
        x = inputs[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        logits = model(x)
        prob.append(logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1).cpu())
        correct.append((logits.argmax(dim=1) == y).cpu())
        loss.append(F.cross_entropy(logits, y, reduction="none").cpu())
    return {"true_prob": torch.cat(prob).numpy(), "correct": torch.cat(correct).numpy(),
            "loss": torch.cat(loss).numpy()}
