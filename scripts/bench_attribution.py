"""Benchmark the batched FedCCCU attribution against Captum, its floor and a naive loop.

Captum 0.9's ``IntegratedGradients`` on every site's activation (a development
dependency) is the independent reference: the script prints its time over ours and the
largest relative difference of the scores. The issue's case:
``--model resnet18 --width 16 --samples 64 --steps 20``.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import bench_utils  # noqa: F401  (puts the project on sys.path)
import numpy as np
import torch
from bench_utils import captum_attribution
from torch import nn

from fedunl_flwr.models import MODELS, NeuronSite, build_model, get_device
from fedunl_flwr.unlearning.neurons import integrated_gradient_attribution


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def floor_passes(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                 steps: int, num_sites: int, batch_size: int) -> None:
    """``num_sites * steps`` forward+backward passes per sample, no hooks.

    Same batch shapes as the batched attribution (``batch_size * steps`` rows); the
    backward goes from sum P(y|x) to the input with parameters frozen, i.e. the
    full activation-gradient chain and no weight gradients.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        for start in range(0, len(labels), batch_size):
            x = inputs[start:start + batch_size].repeat_interleave(steps, dim=0)
            y = labels[start:start + batch_size].repeat_interleave(steps)
            for _ in range(num_sites):
                x_leaf = x.clone().requires_grad_(True)
                probs = torch.softmax(model(x_leaf), dim=1)
                torch.autograd.grad(probs.gather(1, y[:, None]).sum(), x_leaf)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def naive_per_unit_attribution(model: nn.Module, inputs: torch.Tensor,
                               labels: torch.Tensor, steps: int, site: NeuronSite,
                               units: list[int], batch_size: int) -> np.ndarray:
    """Paper eq. 3 done literally: one forward+backward per unit and step.

    Only unit ``k`` is scaled to ``(j/m) * beta_k``; the gradient of P(y|x) is taken
    w.r.t. that unit's activation. Returns the per-unit scores summed over samples.
    """
    module = dict(model.named_modules())[site.name]
    scores = np.zeros(len(units))
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        for start in range(0, len(labels), batch_size):
            x = inputs[start:start + batch_size]
            y = labels[start:start + batch_size]
            for index, unit in enumerate(units):
                for j in range(1, steps + 1):
                    leaf: dict[str, torch.Tensor] = {}

                    def hook(_m, _a, output, unit=unit, j=j, leaf=leaf):
                        beta = output.detach()
                        leaf["beta"] = beta[:, unit]
                        leaf["a"] = (beta[:, unit] * (j / steps)).requires_grad_(True)
                        spliced = beta.clone()
                        spliced[:, unit] = leaf["a"]
                        return spliced

                    handle = module.register_forward_hook(hook)
                    try:
                        probs = torch.softmax(model(x), dim=1)
                    finally:
                        handle.remove()
                    (grad,) = torch.autograd.grad(probs.gather(1, y[:, None]).sum(),
                                                  leaf["a"])
                    scores[index] += float((leaf["beta"] * grad).sum()) / steps
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="cnn", choices=sorted(MODELS))
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="samples per pass (x steps rows in the batched passes)")
    parser.add_argument("--in-channels", type=int, default=0,
                        help="0: 1 for cnn, else 3")
    parser.add_argument("--size", type=int, default=0, help="0: 28 for cnn, else 32")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--naive-units", type=int, default=8,
                        help="units per site timed for the naive loop (extrapolated)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    in_channels = args.in_channels or (1 if args.model == "cnn" else 3)
    size = args.size or (28 if args.model == "cnn" else 32)
    device = get_device()
    model = build_model(args.model, in_channels, args.classes, args.width,
                        seed=args.seed).to(device).eval()
    gen = torch.Generator().manual_seed(args.seed)
    inputs = torch.randn(args.samples, in_channels, size, size, generator=gen).to(device)
    labels = torch.randint(0, args.classes, (args.samples,), generator=gen).to(device)
    sites = list({s.name: s for s in model.neuron_sites()}.values())
    total_units = sum(s.num_units for s in sites)
    m, bs = args.steps, args.batch_size

    # Warm-up (allocator, kernels) on a few samples.
    integrated_gradient_attribution(model, inputs[:4], labels[:4], 2, batch_size=4)
    floor_passes(model, inputs[:4], labels[:4], 2, 1, 4)

    scores: dict[str, dict] = {}
    t_ours = _timed(lambda: scores.setdefault("ours", integrated_gradient_attribution(
        model, inputs, labels, m, batch_size=bs)), device)
    t_captum = _timed(lambda: scores.setdefault("captum", captum_attribution(
        model, inputs, labels, m, internal_batch_size=bs * m)), device)
    difference = max(
        float(np.max(np.abs(scores["ours"][c][site] - reference)
                     / np.maximum(np.abs(reference), 1e-12 + np.abs(reference).max() * 1e-6)))
        for c, by_site in scores["captum"].items() for site, reference in by_site.items())
    t_floor = _timed(lambda: floor_passes(model, inputs, labels, m, len(sites), bs), device)

    t_naive_measured, t_naive, timed_units = 0.0, 0.0, 0
    for site in sites:
        k = min(args.naive_units, site.num_units)
        units = np.linspace(0, site.num_units - 1, k).round().astype(int).tolist()
        t_site = _timed(functools.partial(naive_per_unit_attribution,
                                          model, inputs, labels, m, site, units, bs), device)
        t_naive_measured += t_site
        t_naive += t_site * site.num_units / k
        timed_units += k

    batches = -(-args.samples // bs)
    print(f"model={args.model} width={args.width} input={in_channels}x{size}x{size} "
          f"samples={args.samples} steps={m} batch={bs} device={device} "
          f"threads={torch.get_num_threads()} sites={len(sites)} units={total_units}")
    print(f"{'method':<34}{'seconds':>10}{'passes':>10}  note")
    print(f"{'(a) ours: batched, all sites':<34}{t_ours:>10.3f}{len(sites) * batches:>10}"
          f"  one fwd+bwd per site and batch of {bs}x{m} rows")
    print(f"{'(captum) IntegratedGradients':<34}{t_captum:>10.3f}{len(sites) * batches:>10}"
          f"  per site, {bs}x{m} rows a pass; max relative difference {difference:.1e}")
    print(f"{'(b) floor: plain fwd+bwd':<34}{t_floor:>10.3f}{len(sites) * batches:>10}"
          f"  sites*m passes/sample, no hooks, grad to input")
    print(f"{'(c) naive: per unit, per step':<34}{t_naive:>10.3f}"
          f"{total_units * m * batches:>10}  EXTRAPOLATED from {timed_units} units timed "
          f"({args.naive_units}/site, {t_naive_measured:.3f} s measured)")
    ratio_floor, ratio_naive = t_ours / t_floor, t_naive / t_ours
    ratio_captum = t_captum / t_ours
    print(f"captum/ours = {ratio_captum:6.2f}   goal >= 1.4   "
          f"{'MET' if ratio_captum >= 1.4 else 'NOT MET'}")
    print(f"ours/floor  = {ratio_floor:6.2f}   goal <= 1.5   "
          f"{'MET' if ratio_floor <= 1.5 else 'NOT MET'}")
    print(f"naive/ours  = {ratio_naive:6.1f}   goal >= 10    "
          f"{'MET' if ratio_naive >= 10 else 'NOT MET'}")


if __name__ == "__main__":
    main()
