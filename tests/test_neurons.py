"""Tests of neuron attribution, activation statistics, ranking, dominance and zeroing."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from fedunl_flwr.models import NeuronSite, SiteModel, build_model
from fedunl_flwr.unlearning.neurons import (
    dominance_ratios,
    integrated_gradient_attribution,
    mean_activations,
    select_dominant_units,
    top_units,
    top_units_per_class,
    zero_units,
)

STEPS = 4


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert module.running_mean is not None and module.running_var is not None
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(shape, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=gen) * 0.1)


def _tiny(name: str, in_channels: int) -> tuple[SiteModel, torch.Tensor, torch.Tensor]:
    model = build_model(name, in_channels, 3, width=2, seed=0).double()
    _randomize_bn(model, 1)
    model.eval()
    gen = torch.Generator().manual_seed(2)
    inputs = torch.randn(6, in_channels, 8, 8, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 2, 0, 2, 2, 0])  # two of the three classes
    return model, inputs, labels


def naive_attribution_reference(model: SiteModel, inputs: torch.Tensor,
                                labels: torch.Tensor, steps: int
                                ) -> dict[int, dict[str, np.ndarray]]:
    """Slow reference: one forward/backward per site, unit and step.

    The whole layer is scaled by j/m; the gradient of P(c|x) is taken w.r.t. that
    unit's activation only (a separate leaf spliced into the layer's output).
    """
    modules = dict(model.named_modules())
    classes = sorted(set(labels.tolist()))
    result: dict[int, dict[str, np.ndarray]] = {c: {} for c in classes}
    for site in model.neuron_sites():
        per_sample = torch.zeros(len(labels), site.num_units, dtype=torch.float64)
        for unit in range(site.num_units):
            for j in range(1, steps + 1):
                leaf: dict[str, torch.Tensor] = {}

                def hook(_m, _a, output, unit=unit, j=j, leaf=leaf):
                    scaled = output.detach() * (j / steps)
                    leaf["beta"] = output.detach()[:, unit]
                    leaf["a"] = scaled[:, unit].clone().requires_grad_(True)
                    spliced = scaled.clone()
                    spliced[:, unit] = leaf["a"]
                    return spliced

                handle = modules[site.name].register_forward_hook(hook)
                try:
                    probs = torch.softmax(model(inputs), dim=1)
                finally:
                    handle.remove()
                target = probs[torch.arange(len(labels)), labels].sum()
                (grad,) = torch.autograd.grad(target, leaf["a"])
                contrib = leaf["beta"] * grad / steps
                per_sample[:, unit] += contrib.reshape(len(labels), -1).sum(dim=1)
        for c in classes:
            result[c][site.name] = per_sample[labels == c].mean(dim=0).numpy()
    return result


@pytest.mark.parametrize("name,in_channels", [("cnn", 1), ("resnet18", 3)])
def test_batched_attribution_matches_naive_reference(name: str, in_channels: int) -> None:
    model, inputs, labels = _tiny(name, in_channels)
    expected = naive_attribution_reference(model, inputs, labels, STEPS)
    got = integrated_gradient_attribution(model, inputs, labels, STEPS, batch_size=4)
    assert sorted(got) == [0, 2]
    for c in expected:
        assert list(got[c]) == list(dict.fromkeys(s.name for s in model.neuron_sites()))
        for site, values in expected[c].items():
            assert got[c][site].shape == values.shape
            np.testing.assert_allclose(got[c][site], values, atol=1e-5, rtol=1e-6)
    # Not all-zero: the test actually compares something.
    assert any(np.abs(v).max() > 1e-4 for v in got[0].values())


@pytest.mark.parametrize("name,in_channels", [("cnn", 1), ("resnet18", 3)])
def test_batched_attribution_matches_captum(name: str, in_channels: int) -> None:
    """An independent reference: Captum 0.9's integrated gradients on every site."""
    from scripts.bench_utils import captum_attribution

    model, inputs, labels = _tiny(name, in_channels)
    expected = captum_attribution(model, inputs, labels, STEPS)
    got = integrated_gradient_attribution(model, inputs, labels, STEPS, batch_size=4)
    for c in expected:
        for site, values in expected[c].items():
            np.testing.assert_allclose(got[c][site], values, atol=1e-9, rtol=1e-7)
    assert any(np.abs(v).max() > 1e-4 for v in expected[2].values())


def test_attribution_deterministic_and_restores_model() -> None:
    model, inputs, labels = _tiny("cnn", 1)
    model.train()
    classifier = model.classifier
    assert isinstance(classifier, nn.Linear)
    classifier.weight.requires_grad_(False)
    hooks_before = sum(len(m._forward_hooks) for m in model.modules())
    first = integrated_gradient_attribution(model, inputs.numpy(), labels.numpy(), STEPS)
    second = integrated_gradient_attribution(model, inputs, labels, STEPS, batch_size=1)
    for c in first:
        for site in first[c]:
            np.testing.assert_allclose(first[c][site], second[c][site], atol=1e-12)
    again = integrated_gradient_attribution(model, inputs, labels, STEPS)
    for c in first:
        for site in first[c]:
            np.testing.assert_array_equal(first[c][site], again[c][site])
    assert model.training
    assert not classifier.weight.requires_grad
    assert classifier.bias.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks_before


def test_attribution_subset_of_sites_and_empty() -> None:
    model, inputs, labels = _tiny("cnn", 1)
    site = model.neuron_sites()[-1]
    got = integrated_gradient_attribution(model, inputs, labels, STEPS, sites=[site])
    assert all(list(per_site) == [site.name] for per_site in got.values())
    twice = integrated_gradient_attribution(model, inputs, labels, STEPS, sites=[site, site])
    for c in got:  # a repeated site is scored once, not accumulated twice
        np.testing.assert_array_equal(got[c][site.name], twice[c][site.name])
    assert integrated_gradient_attribution(model, inputs[:0], labels[:0], STEPS) == {}
    with pytest.raises(ValueError):
        integrated_gradient_attribution(model, inputs, labels, 0)


def _site_output(model: nn.Module, site: str, inputs: torch.Tensor) -> torch.Tensor:
    captured: dict[str, torch.Tensor] = {}
    handle = dict(model.named_modules())[site].register_forward_hook(
        lambda _m, _a, out: captured.__setitem__("out", out.detach().clone()))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
    return captured["out"]


@pytest.mark.parametrize("name,in_channels,site,unit", [
    ("cnn", 1, "features.0.act", 1),
    ("cnn", 1, "hidden.act", 3),
    ("resnet18", 3, "stages.2.norm2", 3),
])
def test_zeroed_units_output_exactly_zero(name: str, in_channels: int, site: str,
                                          unit: int) -> None:
    model = build_model(name, in_channels, 3, width=2, seed=0)
    _randomize_bn(model, 3)
    model.eval()
    inputs = torch.randn(16, in_channels, 8, 8, generator=torch.Generator().manual_seed(4))
    before = _site_output(model, site, inputs)
    edited = copy.deepcopy(model)
    zero_units(edited, [(site, unit)])
    after = _site_output(edited, site, inputs)
    assert before[:, unit].abs().max() > 0
    assert torch.equal(after[:, unit], torch.zeros_like(after[:, unit]))
    others = [k for k in range(before.shape[1]) if k != unit]
    assert torch.equal(after[:, others], before[:, others])
    edited.train()  # batch statistics: still exactly zero
    assert torch.equal(_site_output(edited, site, inputs)[:, unit],
                       torch.zeros_like(after[:, unit]))


def test_zero_units_errors_leave_model_untouched() -> None:
    model = build_model("cnn", 1, 3, width=2, seed=0)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="nope"):
        zero_units(model, [("features.0.act", 0), ("nope", 0)])
    with pytest.raises(ValueError, match=r"hidden\.act"):
        zero_units(model, [("hidden.act", 8)])
    with pytest.raises(ValueError, match="-1"):
        zero_units(model, [("hidden.act", -1)])
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


class _Tiny(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.fc = layer
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


def test_mean_activations_hand_checked() -> None:
    linear = nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(2))
        linear.bias.zero_()
    model = _Tiny(linear).train()
    site = NeuronSite("act", ("fc",), 2)
    got = mean_activations(model, np.array([[1.0, -2.0], [3.0, 4.0], [-1.0, 1.0]],
                                           dtype=np.float32), sites=[site], batch_size=2)
    np.testing.assert_allclose(got["act"], [4 / 3, 5 / 3])
    assert model.training

    conv = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    inputs = torch.tensor([[[[1.0, -1.0], [2.0, 3.0]], [[0.0, 0.0], [-5.0, 4.0]]],
                           [[[2.0, 2.0], [0.0, -3.0]], [[1.0, 1.0], [1.0, 1.0]]]])
    got = mean_activations(_Tiny(conv), inputs, sites=[site])
    np.testing.assert_allclose(got["act"], [(1 + 2 + 3 + 2 + 2) / 8, (4 + 4) / 8])


def test_mean_activations_default_sites() -> None:
    model = build_model("cnn", 1, 3, width=2, seed=0)
    got = mean_activations(model, torch.rand(5, 1, 8, 8))
    assert [s.name for s in model.neuron_sites()] == list(got)  # cnn: no repeats
    assert all(v.shape == (s.num_units,) and (v >= 0).all()
               for s, v in zip(model.neuron_sites(), got.values(), strict=True))


def test_top_units_ranking() -> None:
    stats = {"b": np.array([0.5, 2.0, -1.0]), "a": np.array([0.5, 3.0])}
    assert top_units(stats, 4) == [("a", 1, 3.0), ("b", 1, 2.0), ("a", 0, 0.5),
                                   ("b", 0, 0.5)]
    assert top_units(stats, 0) == []
    assert len(top_units(stats, 100)) == 5
    per_class = top_units_per_class({0: stats, 7: {"a": np.array([1.0, 2.0])}}, 1)
    assert per_class == {0: [("a", 1, 3.0)], 7: [("a", 1, 2.0)]}
    with pytest.raises(ValueError):
        top_units(stats, -1)


def test_dominance_ratios_and_selection() -> None:
    forget = [("s", 0, 2.0), ("s", 1, 4.0), ("t", 0, 1.0), ("t", 1, -0.5), ("u", 2, 3.0)]
    others = [
        [("s", 0, 1.0), ("s", 1, 4.0)],
        [("s", 0, 3.0), ("t", 0, 0.5)],
    ]
    ratios = dominance_ratios(forget, others)
    # Ordered by forget score descending.
    assert [(s, u) for s, u, _ in ratios] == [("s", 1), ("u", 2), ("s", 0), ("t", 0),
                                              ("t", 1)]
    r = {(s, u): ratio for s, u, ratio in ratios}
    assert r[("u", 2)] == 0.0           # absent from the others
    assert r[("s", 0)] == 1.5           # max(1, 3) / 2
    assert r[("s", 1)] == 1.0
    assert r[("t", 0)] == 0.5
    assert r[("t", 1)] == math.inf      # S_forget <= 0: not dominant
    assert select_dominant_units(ratios, 2) == [("u", 2), ("t", 0)]
    assert select_dominant_units(ratios, 10) == [("u", 2), ("t", 0), ("s", 1), ("s", 0),
                                                 ("t", 1)]
    assert select_dominant_units(ratios, 0) == []
    assert dominance_ratios(forget, [])[0] == ("s", 1, 0.0)


def test_dominance_ties_by_forget_score() -> None:
    forget = [("a", 0, 1.0), ("b", 0, 5.0), ("a", 1, 5.0)]
    ratios = dominance_ratios(forget, [[("x", 0, 9.0)]])
    assert select_dominant_units(ratios, 3) == [("a", 1), ("b", 0), ("a", 0)]
