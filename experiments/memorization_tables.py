"""Seed 001 tables (Table 1, F2-F6, H9, H10) and Figure 2 from unlearning summaries.

``build_memorization_report(preset, results, out_dir)`` is the ``memorization`` report
of ``experiments.run``. The preset's ``table`` field picks the layout; without it the
layout follows from what varies across the runs (:func:`infer_table`). A run's optional
``label`` (in its ``[[runs]]`` table) replaces its row name.

=======  ================================================  ===============================
table    sections (groups of rows)                         rows
=======  ================================================  ===============================
``1``    scenario (dataset, IID / Non-IID alpha)           Ours, Fine-tune, Retrained
``F2``   scenario                                          rho = ..., Retrained
``F3``   Non-IID degree (alpha)                            Only Fine-tuning, Ours, Retrained
``F4``   scenario                                          SalUn, Localized, Deep, Shallow,
                                                           Ours, Retrained
``F5``   number of leaving clients (and rho)               Ours, Retrained
``F6``   number of clients                                 Ours, Retrained
``H9``   scenario (class-level: D_u and test acc only)     Ours, Fine-tune, Retrained
``H10``  scenario (sample-level)                           Ours, Fine-tune, Retrained
=======  ================================================  ===============================

Each run contributes its unlearned model's numbers; runs that differ only in ``seed``
fall into the same cell and give mean ± std (population std, ddof 0). The Retrained
row of a section pools every distinct retrained model of its runs (J per seed). Columns:
accuracy (%) per memorization group and on D_u with Δ = |row mean - retrained mean|,
test accuracy (%) and local fairness (×10^-3).

Outputs in ``out_dir`` (prefix ``memorization_<table>``): ``.csv`` (numbers, long
format), ``.md`` (the paper's layout, plus the time analysis and CSL agreement),
``_time.csv`` and ``_time.png`` (accuracy vs time of unlearning vs retraining, as
Figure 2).
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fedunl_flwr.config import key_values
from fedunl_flwr.methods import all_methods, get_method
from fedunl_flwr.metrics.memorization import DATASET_ROW_LABEL, MEMORIZATION_GROUP_LABELS
from fedunl_flwr.store import atomic_write_bytes
from fedunl_flwr.summaries import MemorizationEvaluation, PhaseSummary, VerificationEvaluation

TABLES = ("1", "F2", "F3", "F4", "F5", "F6", "H9", "H10")

#: Value columns: five groups, D_u, test accuracy, local fairness, then the verification
#: checks (docs/verification.md; shown when some run has them).
ACCURACY_COLUMNS: tuple[str, ...] = (*MEMORIZATION_GROUP_LABELS, DATASET_ROW_LABEL)
VERIFICATION_COLUMNS: tuple[str, ...] = ("MIA", "ASR")
COLUMNS: tuple[str, ...] = (*ACCURACY_COLUMNS, "Test", "LF", *VERIFICATION_COLUMNS)
COLUMN_TITLES: dict[str, str] = {
    **{label: f"Group {label}" for label in MEMORIZATION_GROUP_LABELS},
    DATASET_ROW_LABEL: "Unlearning Dataset Acc. (%) (Δ↓)",
    "Test": "Test Dataset Acc. (%) ↑",
    "LF": "Local Fairness (10^-3) ↓",
    "MIA": "MIA Efficacy on D_u (%)",
    "ASR": "Backdoor ASR (%)",
}
SELECTION_LABELS = {"redundant": "Ours", "salun": "SalUn", "localized": "Localized",
                    "deep": "Deep", "shallow": "Shallow"}
DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "emnist": "EMNIST",
                  "fashion-mnist": "Fashion-MNIST", "mnist": "MNIST",
                  "tinyimagenet-subset": "Tiny-ImageNet subset", "usps": "USPS",
                  "uci-digits": "UCI digits", "svhn": "SVHN"}
RETRAINED = "Retrained Baseline"


class ReportError(ValueError):
    """The runs cannot make this report (missing, not memorization runs, bad table)."""


@dataclass
class RunResult:
    """One unlearning run: its phase summary and seed 001 evaluation (typed)."""

    path: Path
    summary: PhaseSummary
    evaluation: MemorizationEvaluation
    label: str = ""
    config: dict = field(init=False)

    def __post_init__(self) -> None:
        self.config = key_values(self.summary.config)

    @classmethod
    def load(cls, folder: Path, label: str = "") -> RunResult | None:
        """The run in ``folder``; None when its summary has no memorization evaluation."""
        summary = PhaseSummary.load(Path(folder) / "summary.json")
        evaluation = summary.evaluation(MemorizationEvaluation)
        return None if evaluation is None else cls(Path(folder), summary, evaluation, label)

    @property
    def strategy(self) -> str:
        return self.summary.strategy or str(self.config.get("strategy", ""))

    @property
    def leaving_clients(self) -> int:
        return len(self.summary.request.clients) if self.summary.request else 0

    def verification_values(self, model: int | None) -> list[float]:
        """MIA efficacy and backdoor ASR of the unlearned model (``model`` None) or of
        reference retrained model ``model``; NaN where not measured."""
        checks = self.summary.evaluation(VerificationEvaluation)
        values = []
        for scores in ((checks.verification.mia_efficacy, checks.verification.backdoor_asr)
                       if checks is not None else (None, None)):
            if scores is None:
                values.append(math.nan)
            else:
                values.append(scores.unlearned if model is None else scores.retrained[model])
        return values

    def unlearned_vector(self) -> np.ndarray:
        ev = self.evaluation
        return np.array([*_floats(ev.memorization.group_accuracy.unlearned),
                         ev.test_accuracy.unlearned, ev.local_fairness.unlearned,
                         *self.verification_values(None)], dtype=float)

    def retrained_vectors(self) -> dict[str, np.ndarray]:
        """Reference retrained model store -> its vector (columns of ``unlearned_vector``).

        With held-out retrains only the reference set (not the scoring set) is listed.
        """
        ev = self.evaluation
        return {store: np.array([*_floats(ev.memorization.group_accuracy.retrained[j]),
                                 ev.test_accuracy.retrained[j],
                                 ev.local_fairness.retrained[j],
                                 *self.verification_values(j)], dtype=float)
                for j, store in enumerate(ev.memorization.reference_stores)}


def _floats(values: Sequence) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


# --- labels ----------------------------------------------------------------------------
def scenario_label(config: Mapping) -> str:
    """``cifar10-iid`` -> ``CIFAR-10 IID``; ``cifar10-dir`` -> ``CIFAR-10 Non-IID (α=0.5)``."""
    name = str(config["scenario"])
    for suffix, kind in (("-iid", "iid"), ("-dir", "dir")):
        head, sep, tail = name.partition(suffix)
        if sep and (kind == "dir" or not tail):
            dataset = DATASET_LABELS.get(head, head)
            if kind == "iid":
                return f"{dataset} IID"
            alpha = float(tail) if tail else float(config["dirichlet_alpha"])
            return f"{dataset} Non-IID (α={alpha:g})"
    return name


def _alpha_label(config: Mapping) -> str:
    name = str(config["scenario"])
    if name.endswith("-iid"):
        return "IID"
    tail = name.partition("-dir")[2]
    return f"α = {float(tail) if tail else float(config['dirichlet_alpha']):g}"


def _strategy_row(run: RunResult, fine_tune: str = "") -> str:
    """The method's table label from the registry; a table may rename fine-tuning (F3's
    "Only Fine-tuning"), and FedMemEraser's Table F4 alternatives are named by selection."""
    if run.strategy == "finetune" and fine_tune:
        return fine_tune
    if run.strategy == "fedmemeraser" and run.config["selection"] != "redundant":
        return SELECTION_LABELS.get(run.config["selection"], run.config["selection"])
    return get_method(run.strategy).row_label


def section_and_row(run: RunResult, table: str) -> tuple[str, str]:
    """Where a run goes in ``table`` (a ``label`` given in the preset names its row)."""
    section, row = _place(run, table)
    return section, run.label or row


def _place(run: RunResult, table: str) -> tuple[str, str]:
    config = run.config
    if table == "F2":
        row = ("ρ = 0 (fine-tune)" if run.strategy == "finetune" else
               f"ρ = {config['rho']:g}" if "rho" in config else _strategy_row(run))
        return scenario_label(config), row
    if table == "F3":
        return _alpha_label(config), _strategy_row(run, "Only Fine-tuning")
    if table == "F4":
        return scenario_label(config), _strategy_row(run)
    if table == "F5":
        leaving = run.leaving_clients
        clients = f"{leaving} Client{'s' if leaving != 1 else ''}"
        return f"{clients} (ρ = {config.get('rho', 0.0):g})", \
            _strategy_row(run)
    if table == "F6":
        count = len(run.summary.accuracy.per_client_accuracy) or config["num_clients"]
        return f"{count} Clients", _strategy_row(run)
    return scenario_label(config), _strategy_row(run)


#: Rows that are not a method's label: FedMemEraser's Table F4 selection variants and F3's
#: fine-tuning, first; the retrained reference sits between Ours and the other methods.
VARIANT_ROWS = ("SalUn", "Localized", "Deep", "Shallow", "Only Fine-tuning")
RETRAINED_ORDER = 80


def _row_key(row: str) -> tuple:
    """ρ rows by value, then the variant rows, then methods in registry order (the
    retrained reference at :data:`RETRAINED_ORDER`), then anything else by name."""
    if row.startswith("ρ = "):
        text = row[4:].split(" ")[0]
        return (0, float(text), row)
    if row in VARIANT_ROWS:
        return (1, VARIANT_ROWS.index(row), row)
    orders = {m.row_label: m.order for m in all_methods().values()}
    orders[RETRAINED] = RETRAINED_ORDER
    return (2, orders.get(row, math.inf), row)


def _section_key(section: str) -> tuple:
    """Numeric sections (``2 Clients``, ``α = 0.1``) in numeric order, others by name."""
    text = section.removeprefix("α = ")
    number = text.split(" ")[0]
    try:
        return (float(number), section)
    except ValueError:
        return (math.inf, section)


# --- loading ---------------------------------------------------------------------------
def load_runs(results: Sequence[Mapping[str, Path]],
              labels: Sequence[str] = ()) -> list[RunResult]:
    """The memorization-evaluated unlearning runs among ``results`` (others are skipped).

    ``labels[i]`` (the preset's optional ``label`` of run i) names that run's row.
    """
    runs = []
    for index, result in enumerate(results):
        folder = result.get("unlearn") if isinstance(result, Mapping) else None
        if folder is None:
            continue
        path = Path(folder) / "summary.json"
        if not path.exists():
            raise ReportError(f"run {index}: {path} not found (the run did not complete)")
        label = str(labels[index]) if index < len(labels) and labels[index] else ""
        run = RunResult.load(Path(folder), label)
        if run is not None:
            runs.append(run)
    if not runs:
        raise ReportError("no run with a Grouped Memorization Evaluation (a seed 001 method: "
                          "fedmemeraser, finetune or a baseline) among the preset's results")
    return runs


def infer_table(runs: Sequence[RunResult]) -> str:
    """The table a preset's runs make when the preset names none.

    Class-level requests: H9; sample-level: H10; else the setting that varies across
    runs (beyond seed and strategy): selection F4, number of leaving clients F5,
    number of clients F6, Dirichlet alpha (one scenario) F3, rho F2; otherwise Table 1.
    """
    scopes = {r.summary.request.scope for r in runs if r.summary.request}
    if scopes == {"class"}:
        return "H9"
    if scopes == {"samples"}:
        return "H10"

    def varies(value) -> bool:
        return len({value(r) for r in runs}) > 1

    if varies(lambda r: r.config["selection"] if r.strategy == "fedmemeraser" else "redundant"):
        return "F4"
    if varies(lambda r: r.leaving_clients):
        return "F5"
    if varies(lambda r: r.config["num_clients"]):
        return "F6"
    if not varies(lambda r: r.config["scenario"]) and varies(
            lambda r: r.config["dirichlet_alpha"]):
        return "F3"
    if len({r.config["rho"] for r in runs if r.strategy == "fedmemeraser"}) > 2:
        return "F2"
    return "1"


def normalise_table(name: object) -> str:
    text = str(name).strip().upper().removeprefix("TABLE").strip()
    if text not in TABLES:
        raise ReportError(f"unknown memorization table {name!r}; choose one of {TABLES}")
    return text


# --- aggregation -----------------------------------------------------------------------
@dataclass
class Cell:
    mean: np.ndarray
    std: np.ndarray
    count: int


def _aggregate(vectors: Sequence[np.ndarray]) -> Cell:
    stack = np.vstack(vectors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: empty group
        mean = np.nanmean(stack, axis=0)
        std = np.nanstd(stack, axis=0)
    return Cell(mean, std, len(vectors))


def aggregate(runs: Sequence[RunResult], table: str
              ) -> tuple[dict[str, dict[str, Cell]], dict[str, dict[str, list[RunResult]]]]:
    """Cells per section and row (Retrained row last), and the runs behind each."""
    grouped: dict[str, dict[str, list[RunResult]]] = {}
    for run in runs:
        section, row = section_and_row(run, table)
        grouped.setdefault(section, {}).setdefault(row, []).append(run)
    cells: dict[str, dict[str, Cell]] = {}
    for section in sorted(grouped, key=_section_key):
        rows = grouped[section]
        cells[section] = {row: _aggregate([r.unlearned_vector() for r in rows[row]])
                          for row in sorted(rows, key=_row_key)}
        retrained: dict[str, np.ndarray] = {}
        for row_runs in rows.values():
            for run in row_runs:
                for store, vector in run.retrained_vectors().items():
                    retrained.setdefault(store, vector)
        cells[section][RETRAINED] = _aggregate(list(retrained.values()))
    return cells, grouped


def numbers_frame(cells: Mapping[str, Mapping[str, Cell]]) -> pd.DataFrame:
    """Long format: section, row, column, mean, std, delta (vs Retrained), n."""
    records = []
    for section, rows in cells.items():
        reference = rows[RETRAINED]
        for row, cell in rows.items():
            for index, column in enumerate(COLUMNS):
                delta = math.nan
                if row != RETRAINED and column in ACCURACY_COLUMNS:
                    delta = abs(cell.mean[index] - reference.mean[index])
                records.append({"section": section, "row": row, "column": column,
                                "mean": cell.mean[index], "std": cell.std[index],
                                "delta": delta, "n": cell.count})
    return pd.DataFrame.from_records(records)


def _cell_text(mean: float, std: float, delta: float) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{mean:.2f} ±{std:.2f}"
    return text if math.isnan(delta) else f"{text} ({delta:.2f})"


def markdown_table(numbers: pd.DataFrame, columns: Sequence[str]) -> str:
    """The paper's layout: a bold section line, then one line per row."""
    header = ["", *(COLUMN_TITLES[c] for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for section, part in numbers.groupby("section", sort=False):
        lines.append("| **" + section + "** |" + " |" * len(columns))
        for row, cells in part.groupby("row", sort=False):
            by_column = cells.set_index("column")
            texts = [_cell_text(by_column.at[c, "mean"], by_column.at[c, "std"],
                                by_column.at[c, "delta"]) for c in columns]
            label = f"{row} (n={int(cells['n'].iloc[0])})"
            lines.append("| " + " | ".join([label, *texts]) + " |")
    return "\n".join(lines) + "\n"


# --- noise floor and group sizes ---------------------------------------------------------
FLOOR_ROW = "Retrain vs retrain (noise floor)"


def floor_frame(grouped: Mapping[str, Mapping[str, list[RunResult]]]) -> pd.DataFrame:
    """Per section: samples per memorization group and the "retrain vs retrain" Δ.

    The Δ row is what a model that is itself a fresh retrain gets against the reference
    retrained models (``memorization.retrain_noise_floor`` of the summaries): a Δ of an
    unlearning method below it is indistinguishable from retraining.
    """
    records = []
    for section in sorted(grouped, key=_section_key):
        runs = [run for rows in grouped[section].values() for run in rows]
        sizes = np.mean([r.evaluation.memorization.group_sizes for r in runs], axis=0)
        floors = [f for f in (r.evaluation.memorization.retrain_noise_floor for r in runs)
                  if f is not None]
        record: dict[str, str | float] = {"section": section,
                                           "what": "samples per group (mean over runs)"}
        record.update({label: float(v)
                       for label, v in zip(MEMORIZATION_GROUP_LABELS, sizes, strict=False)})
        record[DATASET_ROW_LABEL] = float(np.mean([r.evaluation.memorization.num_forget_samples
                                                   for r in runs]))
        records.append(record)
        if floors:
            deltas = np.array([_floats(f.delta) for f in floors], dtype=np.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(deltas, axis=0)
            record = {"section": section, "what": f"{FLOOR_ROW} Δ ({floors[0].compared})"}
            record.update({label: float(v)
                           for label, v in zip(ACCURACY_COLUMNS, mean, strict=False)})
            records.append(record)
    return pd.DataFrame.from_records(records)


# --- time analysis ---------------------------------------------------------------------
def time_frame(grouped: Mapping[str, Mapping[str, list[RunResult]]]) -> pd.DataFrame:
    """Per section and row: time/rounds to peak of unlearning and retraining, speedup."""
    records = []
    for section in sorted(grouped, key=_section_key):
        for row in sorted(grouped[section], key=_row_key):
            runs = grouped[section][row]
            timing = [r.evaluation.time_analysis for r in runs]
            csl_ok = [r.evaluation.csl_agreement for r in runs
                      if r.evaluation.csl_agreement.available]
            records.append({
                "section": section, "row": row, "runs": len(runs),
                "unlearn_time_to_peak_s": _mean_known(t.unlearn.get("time_to_peak")
                                                      for t in timing),
                "unlearn_rounds_to_peak": _mean_known(t.unlearn.get("rounds_to_peak")
                                                      for t in timing),
                "retrain_time_to_peak_s": _mean_known(t.retrain.get("time_to_peak")
                                                      for t in timing),
                "retrain_rounds_to_peak": _mean_known(t.retrain.get("rounds_to_peak")
                                                      for t in timing),
                "speedup": _mean_known(t.speedup for t in timing),
                "retrain_timed_in_same_run": all(t.retrain_measured_in_this_run
                                                 for t in timing),
                "csl_cosine": _mean_known(c.cosine for c in csl_ok),
                "csl_top20_overlap": _mean_known(c.top_overlap for c in csl_ok),
            })
    return pd.DataFrame.from_records(records)


def _mean_known(values) -> float:
    """Mean of the values that are not None (NaN when none is)."""
    known = [float(v) for v in values if v is not None]
    return float(np.mean(known)) if known else math.nan


def time_figure(grouped: Mapping[str, Mapping[str, list[RunResult]]], path: Path,
                title: str) -> None:
    """Figure 2: test accuracy vs time, retraining vs each unlearning row (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = sorted(grouped, key=_section_key)
    cols = min(3, len(sections))
    rows = math.ceil(len(sections) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.5, 5.0 * cols), 3.8 * rows),
                             squeeze=False)
    for ax, section in zip(axes.flat, sections, strict=False):
        drawn_retrain = False
        for row in sorted(grouped[section], key=_row_key):
            run = grouped[section][row][0]
            timing = run.evaluation.time_analysis
            if not drawn_retrain and timing.retrain["curve"]:
                curve = np.asarray(timing.retrain["curve"])
                ax.plot(curve[:, 1], 100 * curve[:, 2], "k--", marker=".", label="Retrain")
                drawn_retrain = True
            if timing.unlearn["curve"]:
                curve = np.asarray(timing.unlearn["curve"])
                speed = timing.speedup
                label = row if speed is None else f"{row} ({speed:.1f}x)"
                ax.plot(curve[:, 1], 100 * curve[:, 2], marker=".", label=label)
        ax.set_title(section, fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(sections):]:
        ax.axis("off")
    fig.suptitle("\n".join(textwrap.wrap(title, 80)), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- beyond the noise floor: bootstrap intervals -----------------------------------------
#: Bootstrap draws and the interval's coverage.
BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_LEVEL = 0.95


def bootstrap_interval(per_seed: Sequence[np.ndarray], draws: int = BOOTSTRAP_DRAWS,
                       level: float = BOOTSTRAP_LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of per-sample differences, resampling seeds (the
    arrays) with replacement and, within each drawn seed, its samples.

    ``per_seed[k][i]`` is, for sample i of seed k, the unlearned model's correctness minus
    the reference retrained models' mean correctness: the interval covers the accuracy
    difference to retraining with the variation of both the seeds and the samples.
    NaN bounds when no seed has a sample.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in per_seed if len(a)]
    if not arrays:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.empty(draws)
    for b in range(draws):
        chosen = rng.integers(0, len(arrays), len(arrays))
        stats[b] = np.mean([arrays[k][rng.integers(0, len(arrays[k]), len(arrays[k]))].mean()
                            for k in chosen])
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)


def sample_differences(run: RunResult, column: str) -> np.ndarray:
    """Per forget sample of ``column``'s group (or all of D_u): the unlearned model's
    correctness minus the mean over the reference retrained models (``du_samples.csv``)."""
    frame = pd.read_csv(run.path / "du_samples.csv")
    if column != DATASET_ROW_LABEL:
        frame = frame[frame["group"] == column]
    reference = [f"correct_retrained_{j}"
                 for j in run.evaluation.memorization.reference_retrains]
    return (frame["correct_unlearned"] - frame[reference].mean(axis=1)).to_numpy()


def beyond_noise_frame(grouped: Mapping[str, Mapping[str, list[RunResult]]]) -> pd.DataFrame:
    """Per section, row and accuracy column: the mean difference to retraining (points)
    and its bootstrap interval; ``beyond noise`` when the interval excludes 0."""
    records = []
    for section in sorted(grouped, key=_section_key):
        for row in sorted(grouped[section], key=_row_key):
            runs = grouped[section][row]
            for column in ACCURACY_COLUMNS:
                per_seed = [sample_differences(run, column) for run in runs]
                low, high = bootstrap_interval(per_seed)
                pooled = [d for d in per_seed if len(d)]
                mean = float(np.mean([d.mean() for d in pooled])) if pooled else math.nan
                records.append({"section": section, "row": row, "column": column,
                                "difference": 100 * mean, "low": 100 * low,
                                "high": 100 * high, "seeds": len(pooled),
                                "beyond noise": bool(low > 0 or high < 0)})
    return pd.DataFrame.from_records(records)


def beyond_noise_markdown(frame: pd.DataFrame) -> str:
    """Rows x columns of ``difference [low, high]``, ``*`` where beyond noise."""
    table = frame.assign(cell=[
        f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]{'*' if beyond else ''}" if not math.isnan(d) else "-"
        for d, lo, hi, beyond in zip(frame["difference"], frame["low"], frame["high"],
                                     frame["beyond noise"], strict=True)])
    wide = table.pivot_table(index=["section", "row"], columns="column", values="cell",
                             aggfunc="first", sort=False)
    wide = wide[[c for c in ACCURACY_COLUMNS if c in wide.columns]]
    return wide.reset_index().to_markdown(index=False) + "\n"


# --- the builder -----------------------------------------------------------------------
def build_memorization_report(preset: dict, results: list[dict[str, Path]],
                              out_dir: Path) -> list[Path]:
    """Build the preset's seed 001 table (``preset["table"]``, else inferred from the runs).

    Returns the written files: ``memorization_<T>.csv``, ``.md``, ``_time.csv``,
    ``_time.png``.
    """
    labels = [run.get("label", "") for run in preset.get("runs", [])]
    runs = load_runs(results, labels)
    table = normalise_table(preset["table"]) if preset.get("table") else infer_table(runs)
    cells, grouped = aggregate(runs, table)
    numbers = numbers_frame(cells)
    times = time_frame(grouped)
    floors = floor_frame(grouped)
    noise = beyond_noise_frame(grouped)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"memorization_{table}"
    measured = [c for c in VERIFICATION_COLUMNS
                if numbers.loc[numbers["column"] == c, "mean"].notna().any()]
    shown = ([DATASET_ROW_LABEL, "Test"] if table == "H9" else
             [c for c in COLUMNS if c not in VERIFICATION_COLUMNS or c in measured])
    title = _title(table, preset)
    md = [f"# {title}\n"]
    if preset.get("description"):
        md.append(str(preset["description"]).strip() + "\n")
    md += [markdown_table(numbers, shown),
           "\nCells: mean ±std over seeds (Retrained: over all retrained models) and, in "
           "parentheses, Δ = |mean - retrained mean|. n = runs (models) per cell.\n",
           "\n## Group sizes and the retrain-vs-retrain noise floor\n",
           _frame_markdown(floors),
           "\nMemorization scores below 0 are clipped to 0 and score-0 samples belong to "
           "no group (the authors' evaluation code), so the group sizes may sum to less "
           "than |D_u|.\n",
           "\n## Accuracy minus retraining, with bootstrap intervals\n",
           beyond_noise_markdown(noise),
           f"\nPoints: the unlearned model's accuracy minus the reference retrained "
           f"models' mean, per group; in brackets the {BOOTSTRAP_LEVEL:.0%} percentile "
           f"interval of {BOOTSTRAP_DRAWS} bootstrap draws that resample the seeds and, "
           "within each, the group's samples. * = the interval excludes 0: the row "
           "differs from retraining beyond the noise of seeds and samples (a row without * "
           "cannot be told from retraining, or ranked against another such row).\n",
           "\n## Time analysis and CSL agreement\n",
           _frame_markdown(times),
           f"\nSpeedup = retrain time to peak / unlearning time to peak (peak = first "
           f"evaluated round within {_tolerance(runs)} points of the best test accuracy, "
           "both runs within the same round budget).\n"]
    written = []
    for name, text in ((f"{stem}.csv", numbers.to_csv(index=False, float_format="%.4f")),
                       (f"{stem}_floor.csv", floors.to_csv(index=False, float_format="%.4f")),
                       (f"{stem}_bootstrap.csv",
                        noise.to_csv(index=False, float_format="%.4f")),
                       (f"{stem}.md", "\n".join(md)),
                       (f"{stem}_time.csv", times.to_csv(index=False, float_format="%.4f"))):
        atomic_write_bytes(out_dir / name, text.encode())
        written.append(out_dir / name)
    figure = out_dir / f"{stem}_time.png"
    time_figure(grouped, figure, f"{title}: test accuracy vs time")
    written.append(figure)
    return written


def _tolerance(runs: Sequence[RunResult]) -> str:
    value = runs[0].evaluation.time_analysis.peak_tolerance
    return f"{100 * float(value):g}"


def _frame_markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".2f") + "\n"


def _title(table: str, preset: Mapping) -> str:
    names = {"1": "Table 1: FedMemEraser vs fine-tuning and retraining",
             "F2": "Table F2: pruning ratio rho",
             "F3": "Table F3: Non-IID degree",
             "F4": "Table F4: parameter selection strategies",
             "F5": "Table F5: several clients leave",
             "F6": "Table F6: number of clients",
             "H9": "Table H9: class-level unlearning",
             "H10": "Table H10: sample-level unlearning"}
    return names[table]
