"""Helpers shared by the benchmark scripts: import path and process-tree memory."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

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


class PeakMemory:
    """Samples :func:`tree_rss` in a background thread; ``peak`` holds the maximum."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss())
