"""The processes a runner started, read from ``/proc`` (Linux): what a runner stops when it
is interrupted."""

from __future__ import annotations

import os
from pathlib import Path


def descendants(pid: int) -> dict[int, int]:
    """Every descendant of ``pid`` (children, their children, ...) with its process group:
    Ray's cluster and workers, or a SuperLink's SuperExec and simulation, which may run in
    sessions of their own."""
    children: dict[int, list[int]] = {}
    groups: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone since the listing
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        groups[int(entry)] = int(fields[2])
    found: dict[int, int] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found[child] = groups[child]
            stack.append(child)
    return found
