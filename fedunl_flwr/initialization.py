"""Initialisation schemes of the models, shared by model building and FedMemEraser's reset.

A scheme gives every floating state-dict tensor a distribution (:class:`InitRule`). The
model is built from it, and FedMemEraser re-draws reset entries from the same rule, so a
reset entry comes from "the original parameter initialization strategy" (seed 001 Alg. 1
step 6) whatever the scheme. Running statistics (BatchNorm buffers) have no rule.

- ``pytorch``: PyTorch's defaults. Conv/linear weights ``kaiming_uniform_(a=sqrt(5))``,
  i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)); their biases U(-1/sqrt(fan_in), ...) with the
  layer's fan-in; norm weights 1 and norm biases 0 (constants).
- ``kaiming-relu``: the FedMemEraser authors' code. Tensors with 2+ dims
  ``kaiming_uniform_(nonlinearity="relu")``, i.e. U(-sqrt(6/fan_in), sqrt(6/fan_in));
  every 1-D tensor (biases, norm weights and biases) U(-0.1, 0.1).
- ``he``: He initialisation for ReLU networks: conv/linear weights as ``kaiming-relu``
  (sqrt(6) times PyTorch's bound), biases and norm parameters as ``pytorch`` (norm
  weights 1, not the authors' U(-0.1, 0.1), which slows training down).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

#: Scheme name -> one doc line (README and run-config validation).
INIT_SCHEMES: dict[str, str] = {
    "pytorch": "PyTorch's default initialisation (conv/linear U(+-1/sqrt(fan_in)), norms 1/0)",
    "kaiming-relu": "the FedMemEraser authors': 2+-dim kaiming_uniform_(relu), 1-D U(-0.1, 0.1)",
    "he": "He (kaiming_uniform_(relu)) conv/linear weights; biases and norms as PyTorch's",
}

#: State-dict entries with these name endings are running statistics, never initialised
#: or re-drawn from a rule.
BUFFER_NAME_SUFFIXES: tuple[str, ...] = ("running_mean", "running_var", "num_batches_tracked")

#: Half-width of the uniform distribution of 1-D tensors in the ``kaiming-relu`` scheme.
ONE_D_BOUND: float = 0.1


@dataclass(frozen=True)
class InitRule:
    """U(-bound, bound) when ``constant`` is None, else the constant value."""

    bound: float = 0.0
    constant: float | None = None

    def draw(self, shape: torch.Size, generator: torch.Generator) -> Tensor:
        """A fresh float32 CPU tensor of ``shape`` from this rule."""
        if self.constant is not None:
            return torch.full(tuple(shape), float(self.constant))
        fresh = torch.empty(tuple(shape), dtype=torch.float32)
        return fresh.uniform_(-self.bound, self.bound, generator=generator)


def is_buffer_name(name: str) -> bool:
    """Whether a state-dict name is a running statistic (never a trainable parameter)."""
    return name.rsplit(".", 1)[-1] in BUFFER_NAME_SUFFIXES


def fan_in(shape: tuple[int, ...]) -> int:
    """Fan-in as ``torch.nn.init._calculate_fan_in_and_fan_out``."""
    if len(shape) < 2:
        raise ValueError(f"fan-in needs a tensor with 2+ dims, got shape {shape}")
    return int(shape[1]) * math.prod(shape[2:])


def init_rule(name: str, state: Mapping[str, Tensor], scheme: str) -> InitRule | None:
    """The distribution tensor ``name`` of ``state`` is drawn from under ``scheme``.

    Returns None for tensors without one (running statistics, integer or scalar tensors).
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {sorted(INIT_SCHEMES)}")
    tensor = state[name]
    if is_buffer_name(name) or not tensor.is_floating_point() or tensor.ndim == 0:
        return None
    shape = tuple(int(d) for d in tensor.shape)
    if scheme == "kaiming-relu":
        if len(shape) == 1:
            return InitRule(ONE_D_BOUND)
        return InitRule(math.sqrt(6.0 / fan_in(shape)))
    if len(shape) >= 2:
        return InitRule(math.sqrt((6.0 if scheme == "he" else 1.0) / fan_in(shape)))
    # 1-D under PyTorch's defaults: a layer bias takes the layer's fan-in; norm affine
    # parameters (their sibling weight is 1-D too) start at 1 (weight) and 0 (bias).
    prefix, _, leaf = name.rpartition(".")
    sibling = state.get(f"{prefix}.weight" if prefix else "weight")
    if leaf == "bias" and sibling is not None and sibling.ndim >= 2:
        return InitRule(1.0 / math.sqrt(fan_in(tuple(sibling.shape))))
    return InitRule(constant=1.0 if leaf == "weight" else 0.0)


def initial_state(state: Mapping[str, Tensor], scheme: str,
                  generator: torch.Generator) -> dict[str, Tensor]:
    """A new state dict: every tensor with a rule drawn afresh, in state-dict order."""
    result: dict[str, Tensor] = {}
    for name, tensor in state.items():
        rule = init_rule(name, state, scheme)
        result[name] = (tensor.detach().clone() if rule is None else
                        rule.draw(tensor.shape, generator).to(tensor.device, tensor.dtype))
    return result


def initialize_model(model: torch.nn.Module, scheme: str, generator: torch.Generator) -> None:
    """Initialise ``model`` in place under ``scheme`` from ``generator``."""
    model.load_state_dict(initial_state(model.state_dict(), scheme, generator))
