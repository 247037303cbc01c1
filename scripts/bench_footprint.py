"""Benchmark: the memory footprint of a ``scripts/flwr_run.py`` run, by process role.

Starts the runner (default: the main job, no run-config overrides) with a results folder
of its own, samples the proportional set size (PSS, shared pages split between their
users) of every process whose environment names that folder (the runner, its watchdog,
the SuperLink, the SuperExec, ``flwr run``, the simulation and Ray's processes) every
0.5 s, and prints the peak of the total and each role's share at that peak.
Usage: ``python scripts/bench_footprint.py [-- -c "num-server-rounds=2"]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from bench_utils import PeakSampler

ROOT = Path(__file__).resolve().parents[1]

#: (role, substring of the command line), first match wins.
ROLES = (
    ("runner watchdog", "flwr_run.py --watch"),
    ("runner", "flwr_run.py"),
    ("SuperLink", "flower-superlink"),
    ("SuperExec", "flower-superexec"),
    ("flwr run (log stream)", "flwr run"),
    ("simulation + ServerApp", "flwr-simulation"),
    ("Ray client actors", "ClientAppActor"),
    ("Ray service processes", ""),
)


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def role_of(command: str) -> str:
    return next(role for role, marker in ROLES if marker in command)


def sample(marker: bytes) -> dict[str, int]:
    """PSS (KiB) per role of the processes whose environment contains ``marker``."""
    usage: dict[str, int] = defaultdict(int)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if marker not in Path(f"/proc/{entry}/environ").read_bytes():
                continue
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            usage[role_of(command.decode(errors="replace"))] += pss_kib(int(entry))
        except OSError:  # the process ended meanwhile
            continue
    return usage


class PeakPss(PeakSampler):
    """The PSS per role (KiB) at the peak of the total, over samples every ``interval``
    seconds while the ``with`` block runs, of the processes whose environment contains
    ``marker``."""

    def __init__(self, marker: bytes, interval: float) -> None:
        super().__init__(lambda: sample(marker), interval, {},
                         size=lambda usage: sum(usage.values()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runner_args", nargs="*", help="arguments for scripts/flwr_run.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedunl-footprint-") as folder:
        env = {**os.environ, "FEDUNL_RESULTS_DIR": folder}
        with PeakPss(folder.encode(), 0.5) as memory:
            run = subprocess.run([sys.executable, "scripts/flwr_run.py", *args.runner_args],
                                 cwd=ROOT, env=env, capture_output=True, text=True)
    peak = memory.peak
    print(f"runner exit status {run.returncode}")
    total = sum(peak.values())
    print(f"peak PSS of the run's processes: {total / 1024:.0f} MiB")
    for role, kib in sorted(peak.items(), key=lambda item: -item[1]):
        print(f"  {role:<26} {kib / 1024:6.0f} MiB  {100 * kib / max(1, total):5.1f}%")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
