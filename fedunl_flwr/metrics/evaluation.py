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
    """Per-sample true-label probability, correctness, loss, the prediction's entropy and
    its modified entropy (Song & Mittal 2021: -(1 - p_y) log p_y - sum_{i != y} p_i
    log(1 - p_i), the membership-inference features)."""
    device = next(model.parameters()).device
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("true_prob", "correct", "loss",
                                                            "entropy", "m_entropy")}
    for start in range(0, len(labels), batch_size):
        x = inputs[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        logits = model(x)
        probs = logits.softmax(dim=1)
        true = probs.gather(1, y[:, None]).squeeze(1)
        log_probs = logits.log_softmax(dim=1)
        others = torch.ones_like(probs, dtype=torch.bool).scatter_(1, y[:, None], False)
        log_rest = torch.log1p(-probs.clamp(max=1 - 1e-7))
        parts["true_prob"].append(true.cpu())
        parts["correct"].append((logits.argmax(dim=1) == y).cpu())
        parts["loss"].append(F.cross_entropy(logits, y, reduction="none").cpu())
        parts["entropy"].append(-(probs * log_probs).sum(dim=1).cpu())
        parts["m_entropy"].append((-(1 - true) * log_probs.gather(1, y[:, None]).squeeze(1)
                                   - (probs * log_rest * others).sum(dim=1)).cpu())
    return {k: torch.cat(v).numpy() if v else np.zeros(0, bool if k == "correct" else float)
            for k, v in parts.items()}
