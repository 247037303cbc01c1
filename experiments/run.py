"""Run a preset: every run of a paper table, then its report.

Usage::

    python -m experiments.run PRESET [--set key=value ...] [--out DIR]
                              [--cpus-per-client N] [--dry-run]
    python -m experiments.run --list

``PRESET`` is a name from ``experiments/presets/`` (``fair-digits-cpu``) or a path to
a TOML file of this shape::

    description = "one line"
    report = "fair"                 # a key of REPORTS
    [base]                          # run-config shared by every run
    scenario = "digits-real-noniid-offline"
    [[runs]]                        # one table of run-config overrides per run
    strategy = "delete-retrain"
    label = "Delete"                # optional column name in the report (not run-config)

Two optional keys multiply the runs: ``seeds = [0, 1, 2]`` repeats every run with each
``seed``, and ``[[sections]]`` tables (run-config overrides, e.g. one scenario each)
repeat every run in each section (a run's own keys win over its section's).

``--set key=value`` overrides run-config in every run (values are TOML; a bare word
or ``0,3`` is taken as a string). All runs' configurations, and the report builder,
are checked before the first run starts. Each run is one in-process Flower
simulation (``experiments.simulate.simulate``); runs share the run store, so the
original model is trained once and completed phases are loaded, not recomputed.
The report goes to ``--out`` or ``<results-dir>/reports/<preset name>/``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import fields
from importlib import import_module
from pathlib import Path
from typing import Any

from experiments.simulate import ENGINES
from fedunl_flwr.client_app import load_run_config
from fedunl_flwr.config import ConfigError, RunConfig
from fedunl_flwr.processes import descendants

PRESETS_DIR = Path(__file__).resolve().parent / "presets"

# report name -> "module:function"; function(preset, results, out_dir) -> list[Path].
# Imported only when a preset names it, so a module may arrive later.
REPORTS: dict[str, str] = {
    "fair": "experiments.fair_tables:build_report",
    "memorization": "experiments.memorization_tables:build_memorization_report",
    "cross": "experiments.cross_tables:build_cross_report",
}
PRESET_KEYS = {"table", "description", "report", "base", "runs", "seeds", "sections"}
RUN_ONLY_KEYS = {"label"}  # allowed in [[runs]] tables, not run-config

ReportBuilder = Callable[[dict, list[dict[str, Path]], Path], list[Path]]


class PresetError(ValueError):
    """A preset file is missing, malformed, or one of its runs is misconfigured."""


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    """A preset by name (``experiments/presets/<name>.toml``) or by path."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise PresetError(f"preset file {path} not found")
        return path
    path = PRESETS_DIR / f"{name}.toml"
    if not path.is_file():
        raise PresetError(f"unknown preset {name!r}; presets in {PRESETS_DIR}: "
                          f"{', '.join(available_presets()) or '(none)'}")
    return path


def load_preset(name: str) -> tuple[str, dict]:
    """``(preset name, preset dict)``; checks the file's shape."""
    path = preset_path(name)
    try:
        preset = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise PresetError(f"preset {path} is not valid TOML: {err}") from err
    unknown = sorted(set(preset) - PRESET_KEYS)
    if unknown:
        raise PresetError(f"preset {path}: unknown top-level key(s) {unknown}; expected "
                          f"{sorted(PRESET_KEYS)}")
    if preset.get("report") not in REPORTS:
        raise PresetError(f"preset {path}: report must be one of {sorted(REPORTS)}, got "
                          f"{preset.get('report')!r}")
    if not isinstance(preset.get("base", {}), dict):
        raise PresetError(f"preset {path}: [base] must be a table")
    runs = preset.get("runs")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise PresetError(f"preset {path}: needs at least one [[runs]] table")
    seeds = preset.get("seeds", [None])
    if not isinstance(seeds, list) or not seeds or not all(
            s is None or (isinstance(s, int) and s >= 0) for s in seeds):
        raise PresetError(f"preset {path}: seeds must be a non-empty list of integers >= 0")
    sections = preset.get("sections", [{}])
    if not isinstance(sections, list) or not sections or not all(
            isinstance(t, dict) for t in sections):
        raise PresetError(f"preset {path}: sections must be [[sections]] tables")
    preset["runs"] = [{**section, **run, **({"seed": seed} if seed is not None else {})}
                      for section in sections for seed in seeds for run in runs]
    return path.stem, preset


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> run-config overrides (TOML values, strings as fallback)."""
    from fedunl_flwr.methods import all_options

    kinds = {f.name.replace("_", "-"): type(getattr(RunConfig, f.name))
             for f in fields(RunConfig) if f.name != "options"}
    kinds.update({key: type(option.default) for key, option in all_options().items()})
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PresetError(f"--set expects key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        if kinds.get(key) is str and not isinstance(value, str):
            value = text  # e.g. forget-classes=0
        out[key] = value
    return out


def plan_runs(preset: dict, sets: dict[str, Any]) -> list[tuple[dict[str, Any], RunConfig]]:
    """Every run's overrides and validated config; raises before anything runs,
    including when a dataset a run needs is not in its data folder or its model cannot
    take the dataset's images."""
    from fedunl_flwr.data.scenarios import check_datasets
    from fedunl_flwr.phases import check_model_input
    from fedunl_flwr.server_app import check_names

    plan = []
    checked: set[tuple] = set()
    base = dict(preset.get("base", {}))
    for index, run in enumerate(preset["runs"], start=1):
        overrides = {**base, **{k: v for k, v in run.items() if k not in RUN_ONLY_KEYS},
                     **sets}
        try:
            config = load_run_config({}, overrides)
            check_names(config)
            data = (config.scenario, str(config.resolved_data_dir()), config.download)
            if data not in checked:
                check_datasets(*data)
                checked.add(data)
            model = (*data, config.model, config.model_width, config.model_norm)
            if model not in checked:
                check_model_input(config)
                checked.add(model)
        except (ConfigError, ValueError, FileNotFoundError) as err:
            raise PresetError(f"run {index} ({run}): {err}") from err
        plan.append((overrides, config))
    return plan


def report_builder(name: str) -> ReportBuilder:
    """Import the report function named by ``REPORTS[name]``."""
    target = REPORTS[name]
    module_name, _, function = target.partition(":")
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as err:
        raise PresetError(f"report {name!r} needs module {module_name}, which is not "
                          f"available ({err})") from err
    builder = getattr(module, function, None)
    if builder is None:
        raise PresetError(f"report {name!r}: {module_name} has no function {function!r}")
    return builder


def run_preset(name: str, sets: dict[str, Any] | None = None, out: Path | None = None,
               cpus_per_client: float | None = None, dry_run: bool = False,
               engine: str = "ray") -> list[Path]:
    """Validate, run every run of the preset, build its report; the report's files.

    ``engine`` is ``simulate``'s: ``ray`` (Flower's simulation) or ``inprocess`` (the same
    apps over the in-process grid: no Ray start per run, clients one after another)."""
    from experiments.simulate import simulate

    preset_name, preset = load_preset(name)
    plan = plan_runs(preset, sets or {})
    build = report_builder(preset["report"])
    out_dir = Path(out) if out else (plan[0][1].resolved_results_dir() / "reports"
                                     / preset_name)
    print(f"preset {preset_name}: {preset.get('description', '')}")
    for index, (_, config) in enumerate(plan, start=1):
        print(f"  run {index}/{len(plan)}: strategy={config.strategy} "
              f"scenario={config.scenario} results-dir={config.resolved_results_dir()}")
    if dry_run:
        print(f"dry run: {len(plan)} run(s) valid; report {preset['report']!r} -> {out_dir}")
        return []
    results = []
    preset_start = time.perf_counter()
    for index, (overrides, config) in enumerate(plan, start=1):
        start = time.perf_counter()
        print(f"[{index}/{len(plan)}] running {config.strategy} ...", flush=True)
        try:
            results.append(simulate(overrides, cpus_per_client=cpus_per_client,
                                    engine=engine))
        except (RuntimeError, ValueError) as err:
            raise PresetError(f"run {index} ({config.strategy}) failed: {err}. Completed "
                              "phases stay in the run store; rerunning the preset resumes "
                              "from them.") from err
        print(f"[{index}/{len(plan)}] {config.strategy} done in "
              f"{time.perf_counter() - start:.1f} s: "
              f"{', '.join(str(p) for p in results[-1].values())}", flush=True)
    written = build(preset, results, out_dir)
    print(f"preset {preset_name}: {len(plan)} run(s) in "
          f"{(time.perf_counter() - preset_start) / 60:.1f} min (phases the run store "
          "already held were loaded, not computed)")
    print(f"report {preset['report']!r} for preset {preset_name} written to {out_dir}:")
    for path in written:
        print(f"  {path}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.run",
                                     description="Run a preset's runs and build its report.")
    parser.add_argument("preset", nargs="?", help="preset name or path to a TOML file")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        metavar="KEY=VALUE", help="run-config override for every run")
    parser.add_argument("--out", type=Path, help="report folder "
                        "(default <results-dir>/reports/<preset>)")
    parser.add_argument("--cpus-per-client", type=float, default=None,
                        help="CPUs per Ray virtual client (default 1; a round of fewer "
                        "clients than fit at once computes with the idle cores). In process "
                        "every client computes with all threads unless this is given")
    parser.add_argument("--engine", choices=ENGINES, default="ray",
                        help="ray (Flower's simulation, default) or inprocess (the same apps "
                        "over an in-process grid: no Ray)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the preset and print the plan only")
    parser.add_argument("--list", action="store_true", help="list the presets")
    args = parser.parse_args(argv)
    if args.list or not args.preset:
        for name in available_presets():
            _, preset = load_preset(name)
            print(f"{name:28s} {preset.get('description', '')}")
        return 0 if args.list else 2
    if not args.dry_run:
        signal.signal(signal.SIGTERM, _stop_now)
        # Explicit: a runner started in the background of a non-interactive shell inherits
        # SIGINT ignored, and Ctrl-C (or a supervisor's SIGINT) would not stop it.
        signal.signal(signal.SIGINT, _stop_now)
    try:
        run_preset(args.preset, parse_sets(args.sets), args.out, args.cpus_per_client,
                   args.dry_run, args.engine)
    except PresetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _stop_now(signum: int, frame: Any) -> None:
    """Leave at once with 130 on SIGINT or SIGTERM (before ``ray.init`` replaces the
    latter with Ray's own handler). Unwinding through Flower instead let its engine's
    threads call into Ray after Flower had shut it down, and Ray's core worker then ended
    the process with status 1 (seen under load); its ServerApp thread would also keep
    polling for replies for up to an hour. Phases write their summary last (atomically),
    so an interrupted phase is recomputed on rerun. Without Flower's ``ray.shutdown`` the
    Ray processes this one started outlive it (seen for 30 s and more): they are killed."""
    with contextlib.suppress(Exception):  # a print interrupted by the signal holds stdout
        sys.stdout.flush()
    os.write(2, b"fedunl: interrupted; completed phases stay in the run store and a rerun "
                b"resumes from them\n")
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    os._exit(130)


if __name__ == "__main__":
    sys.exit(main())
