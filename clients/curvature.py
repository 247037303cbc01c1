"""Curvature-preconditioned local training for Liu et al. (2022)'s rapid retraining.

A train message whose ``optimizer`` is ``fisher`` or ``adahessian`` trains with a
diagonal-Newton step instead of the run's optimiser: per parameter entry

    m <- β1 m + (1 - β1) g,   v <- β2 v + (1 - β2) D²,
    w <- w - lr / (1 - β1^s) · m / (sqrt(v / (1 - β2^s)) + ε)

(AdaHessian's recursion with Hessian power 1), where g is the batch's mean gradient and D
the curvature diagonal: the **diagonal empirical Fisher** ``D = mean_i g_i ⊙ g_i`` from
per-sample gradients (``fisher``, the paper's Γ; ``torch.func``), or the Hutchinson
estimate ``D = z ⊙ (H z)`` with one Rademacher z (``adahessian``, the authors' code). The
moments restart with every train message, as the authors' code re-creates its optimiser
each round. The paper's block-diagonal averaging (block size b = 3) is not applied (b = 1).
Per-sample gradients are taken with BatchNorm in eval mode (a batch of one has no batch
statistics); the step's own gradient g is the ordinary training-mode one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from clients.local_training import TrainSettings, training_batches

CURVATURE_OPTIMIZERS = ("fisher", "adahessian")
BETAS = (0.9, 0.999)
EPSILON = 1e-8


def fisher_diagonal(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
                    ) -> list[torch.Tensor]:
    """``mean_i g_i ⊙ g_i`` per parameter, g_i sample i's loss gradient (``torch.func``)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    training = model.training
    model.eval()

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    try:
        per_sample = vmap(grad(loss), in_dims=(None, 0, 0))(params, inputs, labels)
    finally:
        model.train(training)
    return [per_sample[n].pow(2).mean(0) for n in names]


def hutchinson_diagonal(parameters: list[nn.Parameter], gradients: tuple[torch.Tensor, ...],
                        generator: torch.Generator) -> list[torch.Tensor]:
    """``z ⊙ (H z)`` with one Rademacher ``z`` (``gradients`` must keep their graph)."""
    probes = [(torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(p) for p in
              parameters]
    products = torch.autograd.grad(gradients, parameters, grad_outputs=probes)
    return [z * hz for z, hz in zip(probes, products, strict=True)]


class DiagonalNewton(torch.optim.Optimizer):
    """The AdaHessian recursion above for a supplied curvature diagonal per parameter."""

    def __init__(self, params: list[nn.Parameter], lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, diagonals: list[torch.Tensor]) -> None:  # type: ignore[override]  # needs D
        params = [p for group in self.param_groups for p in group["params"]]
        for p, diagonal in zip(params, diagonals, strict=True):
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"], state["m"], state["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
            state["step"] += 1
            s = state["step"]
            state["m"].mul_(BETAS[0]).add_(p.grad, alpha=1 - BETAS[0])
            state["v"].mul_(BETAS[1]).addcmul_(diagonal, diagonal, value=1 - BETAS[1])
            denominator = (state["v"] / (1 - BETAS[1] ** s)).sqrt_().add_(EPSILON)
            p.addcdiv_(state["m"], denominator, value=-self.defaults["lr"] / (1 - BETAS[0] ** s))


def train_curvature_epochs(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                           settings: TrainSettings, generator: torch.Generator) -> float:
    """Like ``train_epochs`` with a :class:`DiagonalNewton` step (``settings.optimizer``
    names the curvature); returns the mean loss."""
    if settings.optimizer not in CURVATURE_OPTIMIZERS:
        raise ValueError(f"curvature optimizer must be one of {CURVATURE_OPTIMIZERS}, "
                         f"got {settings.optimizer!r}")
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = DiagonalNewton(parameters, settings.learning_rate)
    hessian = settings.optimizer == "adahessian"
    model.train()
    total, count = 0.0, 0
    for batch, x, y in training_batches(model, inputs, labels, settings, generator):
        loss = F.cross_entropy(model(x), y)
        gradients = torch.autograd.grad(loss, parameters, create_graph=hessian)
        diagonals = (hutchinson_diagonal(parameters, gradients, generator) if hessian
                     else fisher_diagonal(model, x, y))
        for p, g in zip(parameters, gradients, strict=True):
            p.grad = g.detach()
        optimizer.step([d.detach() for d in diagonals])
        total += loss.item() * len(batch)
        count += len(batch)
    return total / max(1, count)
