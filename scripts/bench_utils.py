"""Helpers shared by the benchmark scripts: import path, process-tree memory and the
independent attribution reference (Captum)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without the package installed
    sys.path.insert(0, str(ROOT))


def plain_fedavg_round(global_model, local, data, settings, generators, weights) -> None:
    """One FedAvg round in this process: each client in turn trains a copy of
    ``global_model`` on its ``(x, y)`` with its generator; ``global_model`` becomes the
    mean of the local models weighted by ``weights`` (sample counts, or ones)."""
    import torch

    from clients.local_training import train_epochs

    start = {k: v.clone() for k, v in global_model.state_dict().items()}
    total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in start.items()}
    norm = float(sum(weights))
    for (x, y), generator, weight in zip(data, generators, weights, strict=True):
        local.load_state_dict(start)
        train_epochs(local, x, y, settings, generator)
        for key, value in local.state_dict().items():
            total[key] += value.double() * (weight / norm)
    global_model.load_state_dict({k: v.to(start[k].dtype) for k, v in total.items()})


def _rss_and_parents() -> tuple[dict[int, int], dict[int, int]]:
    rss, parent = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        pid = int(entry)
        parent[pid] = int(fields.get("PPid", "0").strip())
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    return rss, parent


def tree_rss(root: int | None = None) -> int:
    """Resident memory (bytes) of ``root`` and all its descendants (Ray workers too)."""
    root = root or os.getpid()
    rss, parent = _rss_and_parents()
    total = 0
    for pid in rss:
        node = pid
        while node and node != root:
            node = parent.get(node, 0)
        if node == root:
            total += rss[pid]
    return total


class PeakSampler:
    """Calls ``measure`` every ``interval`` seconds in a background thread while the
    ``with`` block runs (and once at its end); ``peak`` holds the result that ``size``
    found largest (``initial`` before the first)."""

    def __init__(self, measure: Callable[[], Any], interval: float, initial: Any,
                 size: Callable[[Any], float] = float) -> None:
        self.measure, self.interval, self.size = measure, interval, size
        self.peak = initial
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _take(self) -> None:
        value = self.measure()
        if self.size(value) > self.size(self.peak):
            self.peak = value

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()


class PeakMemory(PeakSampler):
    """The peak of :func:`tree_rss` (bytes) while the ``with`` block runs."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(tree_rss, interval, 0)


def captum_attribution(model, inputs, labels, steps: int,
                       internal_batch_size: int | None = None) -> dict[int, dict[str, np.ndarray]]:
    """Captum's ``IntegratedGradients`` (zero baseline, right Riemann sum, target P(y|x))
    on each site's activation: the site's output is the input of a function that runs
    the model with that output spliced in. Same output layout as
    ``integrated_gradient_attribution``; ``internal_batch_size`` rows per pass (None:
    all samples x steps at once)."""
    import torch
    from captum.attr import IntegratedGradients

    modules = dict(model.named_modules())
    classes = sorted(set(labels.tolist()))
    result: dict[int, dict[str, np.ndarray]] = {c: {} for c in classes}
    sites = list({s.name: s for s in model.neuron_sites()}.values())
    for site in sites:
        captured: dict[str, torch.Tensor] = {}
        handle = modules[site.name].register_forward_hook(
            lambda _m, _a, output, kept=captured: kept.setdefault("beta", output.detach()))
        with torch.no_grad():
            model(inputs)
        handle.remove()

        def forward(activation, images, site_name: str = site.name):
            handle = modules[site_name].register_forward_hook(lambda *_: activation)
            try:
                return torch.softmax(model(images), dim=1)
            finally:
                handle.remove()

        attributions = IntegratedGradients(forward).attribute(
            captured["beta"], baselines=0.0, target=labels, n_steps=steps,
            method="riemann_right", additional_forward_args=(inputs,),
            internal_batch_size=internal_batch_size)
        per_sample = attributions.reshape(len(labels), site.num_units, -1).sum(dim=2)
        for c in classes:
            result[c][site.name] = per_sample[labels == c].mean(dim=0).detach().cpu().numpy()
    return result
