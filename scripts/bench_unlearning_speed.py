"""Benchmark: FedMemEraser vs retraining time-to-peak, and cost at 10/20/50 clients.

Each client count runs in its own Python process (a fresh Ray cluster) on an empty
results folder, so the original training, the FedMemEraser unlearning and the
retraining it is compared with are all measured in that one run, under the same load.
The parent samples the resident memory (RSS) of that process and all its descendants
(the driver, the Ray GCS/raylet and the Ray worker processes that host the virtual
clients) every 0.2 s and keeps the peak.

Printed per client count: wall time, seconds of the original training, unlearning
(locate + reset + fine-tune) and retraining phases, the time to peak test accuracy of
unlearning and of retraining and their ratio (goal: unlearning >= 2x faster), test
accuracies and peak RSS, plus ratios against the smallest client count.

    python scripts/bench_unlearning_speed.py                 # 10, 20, 50 clients
    python scripts/bench_unlearning_speed.py --clients 10    # the speed check only
    # converged curves (issue 25 point 6): equal caps, each run's plateau
    python scripts/bench_unlearning_speed.py --clients 10 --rounds 30 --unlearn-rounds 30

Besides the time to peak within the common budget, each run's plateau is printed: the
round where a run stopped on "no gain above ``--min-gain`` points for ``--patience``
rounds" would have stopped (``metrics.timing.time_to_plateau``), and the speedup there.

Needs ``FEDUNL_DATA_DIR`` (offline datasets). Defaults are CPU-sized: Fashion-MNIST IID,
small CNN, 200 training samples per client, 10 rounds of training/retraining and
3 rounds of fine-tuning (the paper's ratio of unlearning to training rounds), rho 0.4,
one client leaves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fedunl_flwr.processes import descendants  # noqa: E402  (light: /proc only)


def descendants_rss_kib(root_pid: int) -> int:
    """Sum of VmRSS (KiB) of ``root_pid`` and every process below it (from /proc)."""
    total = 0
    for pid in [root_pid, *descendants(root_pid)]:
        try:
            with open(f"/proc/{pid}/status") as handle:
                total += int(next((line.split()[1] for line in handle
                                   if line.startswith("VmRSS:")), "0"))
        except (OSError, ValueError):  # gone since the listing
            continue
    return total


def child_main(args: argparse.Namespace) -> None:
    """One client count: simulate original + FedMemEraser (+ retraining) and report."""
    sys.path.insert(0, str(ROOT))
    from experiments.simulate import simulate

    overrides = {
        "scenario": args.scenario, "num-clients": args.child, "model": args.model,
        "samples-per-client": args.samples_per_client, "test-samples-per-client": 100,
        "num-server-rounds": args.rounds, "unlearn-rounds": args.unlearn_rounds,
        "local-epochs": 1, "learning-rate": 1e-3, "batch-size": 32, "retrain-seeds": 1,
        "strategy": "fedmemeraser", "rho": args.rho, "forget-scope": "client",
        "forget-clients": str(args.forget_client), "results-dir": args.results_dir,
    }
    start = time.perf_counter()
    paths = simulate(overrides, cpus_per_client=args.cpus_per_client)
    wall = time.perf_counter() - start
    from fedunl_flwr.summaries import MemorizationEvaluation, PhaseSummary, from_json

    train = PhaseSummary.load(paths["train"] / "summary.json")
    data = json.loads((paths["unlearn"] / "summary.json").read_text())
    unlearn, evaluation = PhaseSummary.parse(data), from_json(MemorizationEvaluation, data)
    timing = evaluation.time_analysis
    from fedunl_flwr.metrics.timing import time_to_plateau

    def plateau(curve: list) -> dict | None:
        if not curve:
            return None
        found = time_to_plateau([c[1] for c in curve], [c[2] for c in curve],
                                args.min_gain / 100, args.patience)
        return None if found is None else {
            "round": int(curve[found.round_index][0]), "seconds": found.time,
            "accuracy": 100 * found.peak_accuracy}
    print("BENCH " + json.dumps({
        "clients": args.child, "wall_s": wall, "train_s": train.seconds,
        "unlearn_s": unlearn.extra["unlearn_seconds"],
        "retrain_s": evaluation.memorization.retrained_models["seconds"][0],
        "unlearn_ttp_s": timing.unlearn["time_to_peak"],
        "retrain_ttp_s": timing.retrain["time_to_peak"],
        "unlearn_rounds_to_peak": timing.unlearn["rounds_to_peak"],
        "retrain_rounds_to_peak": timing.retrain["rounds_to_peak"],
        "speedup": timing.speedup, "same_run": timing.retrain_measured_in_this_run,
        "unlearn_plateau": plateau(timing.unlearn["curve"]),
        "retrain_plateau": plateau(timing.retrain["curve"]),
        "test_unlearned": evaluation.test_accuracy.unlearned,
        "test_retrained": evaluation.test_accuracy.retrained[0],
        "test_original": evaluation.test_accuracy.original,
        "min_gain": args.min_gain, "patience": args.patience,
    }), flush=True)


def run_one(args: argparse.Namespace, clients: int, folder: Path) -> dict:
    command = [sys.executable, __file__, "--child", str(clients), "--scenario", args.scenario,
               "--model", args.model, "--samples-per-client", str(args.samples_per_client),
               "--rounds", str(args.rounds), "--unlearn-rounds", str(args.unlearn_rounds),
               "--rho", str(args.rho), "--cpus-per-client", str(args.cpus_per_client),
               "--min-gain", str(args.min_gain), "--patience", str(args.patience),
               "--forget-client", str(args.forget_client),
               "--results-dir", str(folder / f"clients-{clients}")]
    log = folder / f"clients-{clients}.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
        peak = 0
        while process.poll() is None:
            peak = max(peak, descendants_rss_kib(process.pid))
            time.sleep(0.2)
    lines = [line for line in log.read_text().splitlines() if line.startswith("BENCH ")]
    if process.returncode != 0 or not lines:
        raise SystemExit(f"{clients} clients: run failed (exit {process.returncode}); "
                         f"see {log}")
    result = json.loads(lines[-1][len("BENCH "):])
    result["peak_rss_mib"] = peak / 1024
    return result


def print_table(results: list[dict]) -> None:
    base = results[0]
    header = ("clients", "wall s", "train s", "unlearn s", "retrain s", "unl. ttp s",
              "ret. ttp s", "speedup", "phase x", "test unl/ret/orig %", "peak RSS MiB",
              "wall x", "RSS x")
    rows = []
    for r in results:
        rows.append((
            str(r["clients"]), f"{r['wall_s']:.0f}", f"{r['train_s']:.1f}",
            f"{r['unlearn_s']:.1f}", f"{r['retrain_s']:.1f}",
            f"{r['unlearn_ttp_s']:.1f} (r{r['unlearn_rounds_to_peak']})",
            f"{r['retrain_ttp_s']:.1f} (r{r['retrain_rounds_to_peak']:.0f})",
            f"{r['speedup']:.2f}x", f"{r['retrain_s'] / r['unlearn_s']:.2f}x",
            f"{r['test_unlearned']:.1f}/{r['test_retrained']:.1f}/{r['test_original']:.1f}",
            f"{r['peak_rss_mib']:.0f}", f"{r['wall_s'] / base['wall_s']:.2f}",
            f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}"))
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    print("speedup = retrain time to peak / unlearning time to peak (the paper's measure); "
          "phase x = whole retraining phase / whole unlearning phase (seconds)")
    print()
    for r in results:
        verdict = "meets" if r["speedup"] >= 2.0 else "MISSES"
        print(f"{r['clients']} clients: unlearning reaches its peak {r['speedup']:.2f}x "
              f"faster than retraining ({verdict} the 2x goal; both measured in one run: "
              f"{r['same_run']})")
        ends = {}
        for run in ("unlearn", "retrain"):
            found = r[f"{run}_plateau"]
            ends[run] = found and found["seconds"]
            print(f"  {run} plateau (no gain above {r['min_gain']:g} points for "
                  f"{r['patience']} rounds): " + (
                      "none, still rising at the cap" if found is None else
                      f"round {found['round']}, {found['seconds']:.1f} s, "
                      f"{found['accuracy']:.2f}%"))
        if ends["unlearn"] and ends["retrain"]:
            print(f"  speedup at the plateaus: {ends['retrain'] / ends['unlearn']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,20,50",
                        help="comma-separated client counts (default 10,20,50)")
    parser.add_argument("--scenario", default="fashion-mnist-iid")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--samples-per-client", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10,
                        help="training and retraining rounds")
    parser.add_argument("--unlearn-rounds", type=int, default=3)
    parser.add_argument("--rho", type=float, default=0.4)
    parser.add_argument("--forget-client", type=int, default=0)
    parser.add_argument("--min-gain", type=float, default=0.5,
                        help="plateau rule: accuracy points a round must add")
    parser.add_argument("--patience", type=int, default=3,
                        help="plateau rule: rounds without that gain")
    parser.add_argument("--cpus-per-client", type=float, default=1.0,
                        help="Ray CPUs per virtual client (1 = two at a time on 2 cores)")
    parser.add_argument("--results-dir", default="",
                        help="where runs write (default: a fresh temporary folder)")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    if not os.environ.get("FEDUNL_DATA_DIR"):
        raise SystemExit("set FEDUNL_DATA_DIR to the offline datasets folder")
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    folder = Path(args.results_dir or tempfile.mkdtemp(prefix="fedunl-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"scenario {args.scenario}, model {args.model}, {args.samples_per_client} samples "
          f"per client, {args.rounds} training rounds, {args.unlearn_rounds} unlearning "
          f"rounds, rho {args.rho}; runs in {folder}\n", flush=True)
    results = []
    for clients in counts:
        results.append(run_one(args, clients, folder))
        print(f"  {clients} clients done in {results[-1]['wall_s']:.0f} s", flush=True)
    print()
    print_table(results)


if __name__ == "__main__":
    main()
