"""Initialisation schemes, the reset drawing from them, and the named random streams."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from fedunl_flwr.config import RunConfig
from fedunl_flwr.initialization import InitRule, init_rule, initial_state
from fedunl_flwr.models import build_model
from fedunl_flwr.phases import initial_arrays
from fedunl_flwr.seeding import PURPOSES, stream_seed, torch_generator
from fedunl_flwr.unlearning.parameter_selection import reinitialize_parameters
from strategies.retrain import retrain_init_index

REPO = Path(__file__).resolve().parents[1]


def cnn_state() -> dict[str, torch.Tensor]:
    state = build_model("cnn", 1, 10, 8, norm="group").state_dict()
    return {k: v.clone() for k, v in state.items()}


def test_pytorch_rules_match_the_layers_own_defaults() -> None:
    state = cnn_state()
    conv = "features.0.conv.weight"  # (8, 1, 3, 3): fan-in 9
    assert init_rule(conv, state, "pytorch") == InitRule(1 / 3)
    assert init_rule("hidden.fc.bias", state, "pytorch") == InitRule(1 / math.sqrt(256))
    assert init_rule("features.0.norm.weight", state, "pytorch") == InitRule(constant=1.0)
    assert init_rule("features.0.norm.bias", state, "pytorch") == InitRule(constant=0.0)
    # The bound torch's own nn.Linear draws from: every entry of a fresh layer lies within.
    layer = torch.nn.Linear(256, 32)
    assert layer.weight.abs().max() <= 1 / math.sqrt(256)
    assert layer.weight.abs().max() > 0.95 / math.sqrt(256)


def test_kaiming_relu_rules_are_the_authors() -> None:
    state = cnn_state()
    assert init_rule("features.0.conv.weight", state, "kaiming-relu") == InitRule(math.sqrt(6 / 9))
    assert init_rule("features.0.norm.weight", state, "kaiming-relu") == InitRule(0.1)
    probe = torch.empty(64, 16, 3, 3)
    torch.nn.init.kaiming_uniform_(probe, nonlinearity="relu",
                                   generator=torch.Generator().manual_seed(0))
    rule = init_rule("w", {"w": probe}, "kaiming-relu")
    assert rule is not None
    bound = rule.bound
    assert probe.abs().max() <= bound < probe.abs().max() / 0.98


def test_he_rules_are_kaiming_weights_with_pytorchs_biases_and_norms() -> None:
    state = cnn_state()
    assert init_rule("features.0.conv.weight", state, "he") == InitRule(math.sqrt(6 / 9))
    assert init_rule("hidden.fc.bias", state, "he") == InitRule(1 / math.sqrt(256))
    assert init_rule("features.0.norm.weight", state, "he") == InitRule(constant=1.0)
    assert init_rule("features.0.norm.bias", state, "he") == InitRule(constant=0.0)


@pytest.mark.parametrize("scheme", ["pytorch", "kaiming-relu", "he"])
def test_reset_redraws_from_the_models_own_scheme(scheme: str) -> None:
    """Defect 1b: the reset must draw from the distribution the model was built from,
    not from a fixed Kaiming-relu bound (which is sqrt(6) times PyTorch's default)."""
    state = cnn_state()
    name = "hidden.fc.weight"  # (32, 256)
    built = build_model("cnn", 1, 10, 8, seed=3, norm="group", init=scheme).state_dict()
    masks = {name: torch.ones_like(state[name], dtype=torch.bool)}
    reset = reinitialize_parameters(state, masks, torch.Generator().manual_seed(9), scheme)
    # same distribution: equal spread (uniform variance bound^2/3) within sampling noise
    assert reset[name].std().item() == pytest.approx(built[name].std().item(), rel=0.05)
    rule = init_rule(name, state, scheme)
    assert rule is not None
    assert reset[name].abs().max() <= rule.bound


def test_reset_is_independent_of_the_initialisation_stream() -> None:
    """Defect 1b: a reset entry must not equal a multiple of its initial value."""
    config = RunConfig(scenario="fashion-mnist-iid", model="cnn", model_width=8,
                       model_init="kaiming-relu")
    initial = {k: torch.from_numpy(v.numpy()) for k, v in initial_arrays(config, 10, 0).items()}
    name = "hidden.fc.weight"
    masks = {name: torch.ones_like(initial[name], dtype=torch.bool)}
    reset = reinitialize_parameters(initial, masks, torch_generator(config.seed, "reset"),
                                    config.model_init)
    ratio = reset[name] / initial[name]
    assert ratio.std() > 1.0  # unrelated draws, not a constant factor
    correlation = torch.corrcoef(torch.stack([reset[name].flatten(), initial[name].flatten()]))
    assert abs(correlation[0, 1].item()) < 0.05


def test_original_and_retrained_models_share_no_initial_weights() -> None:
    """Defect 1a: retrained model j must not start from the original's weights."""
    config = RunConfig(scenario="fashion-mnist-iid", model="cnn", model_width=8)
    original = initial_arrays(config, 10, 0)
    starts = [initial_arrays(config, 10, retrain_init_index(j)) for j in range(3)]
    name = "hidden.fc.weight"
    values = [original[name].numpy()] + [s[name].numpy() for s in starts]
    for i in range(len(values)):
        for j in range(i + 1, len(values)):
            assert not (values[i] == values[j]).any()
    again = initial_arrays(config, 10, 0)
    assert (again[name].numpy() == original[name].numpy()).all()  # reproducible


def test_streams_are_distinct_and_stable() -> None:
    assert stream_seed(0, "init", 0) != stream_seed(0, "init", 1)
    assert stream_seed(0, "init", 1) != stream_seed(1, "init", 0)
    assert stream_seed(0, "reset") != stream_seed(0, "init", 0)
    assert stream_seed(0, "data-order", 3, "train", 1) != stream_seed(0, "data-order", 3,
                                                                      "retrain-0", 1)
    assert stream_seed(5, "reset") == stream_seed(5, "reset")
    with pytest.raises(ValueError, match="purpose"):
        stream_seed(0, "typo")


def test_every_random_draw_goes_through_named_streams() -> None:
    """The partition is the one stream seeded with ``seed`` itself (documented partitions
    stay as they were); nothing else in the app seeds a generator directly."""
    assert stream_seed(7, "partition") == 7
    with pytest.raises(ValueError, match="no index"):
        stream_seed(7, "partition", 1)
    assert stream_seed(7, "partition") not in {stream_seed(7, p) for p in PURPOSES
                                               if p != "partition"}
    direct = re.compile(r"default_rng\(|manual_seed\(|np\.random\.(seed|rand)|"
                        r"torch\.Generator\(\)\.manual_seed")
    offenders = [f"{path.relative_to(REPO)}:{number}"
                 for folder in ("fedunl_flwr", "strategies", "clients")
                 for path in sorted((REPO / folder).rglob("*.py"))
                 if path.name not in {"seeding.py", "models.py"}
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if direct.search(line)]
    assert offenders == []


def test_initial_state_keeps_running_statistics() -> None:
    model = build_model("resnet18", 3, 10, 4, norm="batch")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = initial_state(state, "kaiming-relu", torch.Generator().manual_seed(0))
    buffers = [k for k in state if k.endswith(("running_mean", "running_var"))]
    assert buffers and all(torch.equal(fresh[k], state[k]) for k in buffers)
