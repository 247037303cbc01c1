"""Benchmark: a ``scripts/flwr_run.py`` simulation of many clients, with and without the
message index of ``fedunl_flwr/flower_patches.py``.

Each variant runs the same training-only job (``fashion-mnist-iid``, a few samples per
client, ``fraction-train`` of them a round, every client evaluating the last round) in a
results folder of its own and reports, from the run's log, the wall time of discovery
(until "N clients connected"), of each training round (training plus, in an evaluated
round, the evaluation) and of the whole run, and the peak PSS of the run's processes
(sampled every 2 s, ``bench_footprint.PeakPss``); then the ratio unpatched / patched.
Usage: ``python scripts/bench_scale.py --clients 1000 [--rounds 2] [--only patched]``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_footprint import PeakPss

ROOT = Path(__file__).resolve().parents[1]


def run(clients: int, rounds: int, samples: int, fraction: float, patched: bool
        ) -> dict[str, float]:
    """Wall-clock seconds of one variant's phases, read off its log as it streams."""
    config = (f"scenario='fashion-mnist-iid' num-clients={clients} "
              f"samples-per-client={samples} test-samples-per-client=1 min-test-per-class=0 "
              f"num-server-rounds={rounds} fraction-train={fraction} evaluate-every={rounds}")
    with tempfile.TemporaryDirectory(prefix="fedunl-scale-") as folder:
        env = {**os.environ, "FEDUNL_RESULTS_DIR": folder,
               "FEDUNL_FLOWER_PATCHES": "1" if patched else "0"}
        with PeakPss(folder.encode(), 2.0) as memory:
            start = time.perf_counter()
            marks: dict[str, float] = {}
            process = subprocess.Popen([sys.executable, "scripts/flwr_run.py", "-c", config],
                                       cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
            assert process.stdout is not None
            tail: list[str] = []
            for line in process.stdout:
                tail = [*tail, line][-40:]
                now = time.perf_counter() - start
                if "Successfully started run" in line:
                    marks["started"] = now
                elif "clients connected" in line:
                    marks["discovery"] = now
                elif found := re.search(r"fedunl train round (\d+)/", line):
                    marks[f"round {found.group(1)}"] = now
            process.wait()
            marks["total"] = time.perf_counter() - start
        peak = memory.peak
        if process.returncode != 0:
            raise RuntimeError(f"the run failed (exit {process.returncode}):\n"
                               + "".join(tail))
    spans = {"start (pre-check, SuperLink, Ray)": marks["started"],
             "discovery": marks["discovery"] - marks["started"]}
    previous = marks["discovery"]
    for index in range(1, rounds + 1):
        spans[f"round {index}"] = marks[f"round {index}"] - previous
        previous = marks[f"round {index}"]
    spans["final evaluation, table, stop"] = marks["total"] - previous
    spans["total"] = marks["total"]
    spans["peak PSS, all processes (MiB)"] = sum(peak.values()) / 1024
    for role, kib in sorted(peak.items(), key=lambda item: -item[1])[:3]:
        spans[f"  of which {role} (MiB)"] = kib / 1024
    return spans


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--samples", type=int, default=6, help="training samples a client")
    parser.add_argument("--fraction-train", type=float, default=0.01)
    parser.add_argument("--only", choices=("patched", "unpatched"))
    args = parser.parse_args()
    variants = [v for v in ("unpatched", "patched") if args.only in (None, v)]
    results = {v: run(args.clients, args.rounds, args.samples, args.fraction_train,
                      v == "patched") for v in variants}
    print(f"{args.clients} clients, {args.samples} training samples each, fraction-train "
          f"{args.fraction_train:g}, {args.rounds} rounds (the last evaluated by all)")
    print(f"{'seconds':<36}" + "".join(f"{v:>12}" for v in variants)
          + ("  unpatched/patched" if len(variants) == 2 else ""))
    for span in results[variants[0]]:
        values = [results[v].get(span, 0.0) for v in variants]
        ratio = f"  {values[0] / values[1]:8.2f}" if len(values) == 2 and values[1] else ""
        print(f"{span:<36}" + "".join(f"{value:>12.1f}" for value in values) + ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
