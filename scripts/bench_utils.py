"""Helpers shared by the benchmark scripts: import path and process-tree memory."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without the package installed
    sys.path.insert(0, str(ROOT))


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
