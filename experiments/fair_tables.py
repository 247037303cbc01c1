"""Seed 000 Tables 4-8 and Figure 4 from the run store's unlearning summaries.

Input: the ``summary.json`` of one unlearning run per route, all from the same
original model and the same request. Output (CSV + Markdown each):

- ``table4_global``: global accuracy and the requesting clients' forget-class
  accuracy, original vs each route (one row, the paper's Table 4 layout);
- ``table5_forget_class``: every client's forget-class accuracy per route
  (Tables 5/6);
- ``table7_per_class``: the first three clients (requesting ones first), every class
  (at most 10, forget classes included), per route (Tables 7/8; the paper's "Our" column
  is FedCCCU);
- ``cost``: what each route cost (client-epochs, clients that trained, seconds);
- ``figure4_accuracy.png``: bars of global accuracy and of the requesting client's
  forget-class accuracy per route (Figure 4);
- ``report.md``: all tables with captions.

Accuracies are in percent; ``-`` (NaN) where a client has no test sample of a class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedunl_flwr.data.scenarios import get_scenario
from fedunl_flwr.methods import all_methods
from fedunl_flwr.store import atomic_write_bytes
from fedunl_flwr.summaries import (
    AccuracySummary,
    PhaseSummary,
    RequestSummary,
    VerificationEvaluation,
)

# Route columns in the paper's order, then the unfair contrast.
MAX_CLASSES = 10
TABLE7_CLIENTS = 3


class ReportError(ValueError):
    """The runs cannot go into one report (missing, or from different experiments)."""


def load_summaries(run_dirs: Mapping[str, Path]) -> dict[str, PhaseSummary]:
    """``summary.json`` of each unlearning folder, keyed like ``run_dirs``; checks they fit."""
    if not run_dirs:
        raise ReportError("no unlearning runs given")
    summaries = {}
    for label, folder in run_dirs.items():
        path = Path(folder) / "summary.json"
        if not path.exists():
            raise ReportError(f"run {label!r}: {path} not found (the run did not complete)")
        summary = PhaseSummary.load(path)
        if summary.phase != "unlearn" or summary.request is None or summary.before is None:
            raise ReportError(f"run {label!r}: {path} is not an unlearning summary")
        summaries[label] = summary
    first_label, first = next(iter(summaries.items()))
    for label, summary in summaries.items():
        if summary.training != first.training:
            raise ReportError(f"runs {first_label!r} and {label!r} start from different "
                              "original models (training settings differ)")
        request, first_request = _asked(summary), _asked(first)
        asked = (request.scope, request.clients, request.classes)
        if asked != (first_request.scope, first_request.clients, first_request.classes):
            raise ReportError(f"runs {first_label!r} and {label!r} answer different "
                              f"requests: {first.request} vs {summary.request}")
    return summaries


def _asked(summary: PhaseSummary) -> RequestSummary:
    """The unlearning request of a summary (:func:`load_fair_summaries` checked it has one)."""
    if summary.request is None:
        raise ReportError(f"{summary.phase!r} summary has no unlearning request")
    return summary.request


def _before(summary: PhaseSummary) -> AccuracySummary:
    """The original model's accuracy in an unlearning summary (checked on loading)."""
    if summary.before is None:
        raise ReportError(f"{summary.phase!r} summary has no original-model accuracy")
    return summary.before


def route_label(label: str, summary: PhaseSummary) -> str:
    """Column name of a run: its method's table label (the paper's route name), else the
    run's own label."""
    methods = all_methods()
    if label == summary.strategy and label in methods:
        return methods[label].row_label
    return label


def _ordered(summaries: Mapping[str, PhaseSummary]) -> list[tuple[str, PhaseSummary]]:
    """Runs in their methods' registry order (unregistered last), then by label."""
    methods = all_methods()

    def rank(item: tuple[str, PhaseSummary]) -> tuple[float, str]:
        method = methods.get(item[1].strategy)
        return (method.order if method else math.inf, item[0])

    return sorted(summaries.items(), key=rank)


def _columns(summaries: Mapping[str, PhaseSummary]) -> list[tuple[str, PhaseSummary]]:
    """``(column name, summary)`` per run, in route order; names made unique."""
    columns, seen = [], set()
    for label, summary in _ordered(summaries):
        name = route_label(label, summary)
        if name in seen:
            name = f"{name} ({label})"
        seen.add(name)
        columns.append((name, summary))
    return columns


def _request(summaries: Mapping[str, PhaseSummary]) -> tuple[list[int], list[int]]:
    request = _asked(next(iter(summaries.values())))
    return [int(c) for c in request.clients], [int(c) for c in request.classes]


def class_label(class_id: int) -> str:
    return f"label_{class_id}"


def table4(summaries: Mapping[str, PhaseSummary]) -> pd.DataFrame:
    """Global accuracy and requesting clients' forget-class accuracy: original vs routes."""
    columns = _columns(summaries)
    first = columns[0][1]
    clients, classes = _request(summaries)
    training = first.training
    scenario = get_scenario(training["scenario"])
    row: dict[tuple[str, str], object] = {}
    for index, group in enumerate(scenario.groups, start=1):
        row[("", f"Data{index}")] = group.dataset
    model = training["model"] or scenario.default_model
    row[("", "Model")] = model + (f" (width {training['model_width']})"
                                  if training["model_width"] else "")
    row[("Global Accuracy", "Original")] = 100.0 * _before(first).global_accuracy
    for name, summary in columns:
        row[("Global Accuracy", name)] = 100.0 * summary.accuracy.global_accuracy
    for pid in clients:
        for class_id in classes:
            header = f"Client {pid} ({class_label(class_id)}) Accuracy"
            row[(header, "Original")] = _before(first).class_accuracy(pid, class_id)
            for name, summary in columns:
                row[(header, name)] = summary.accuracy.class_accuracy(pid, class_id)
    frame = pd.DataFrame([row], index=[scenario.name])
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def table5(summaries: Mapping[str, PhaseSummary]) -> pd.DataFrame:
    """Every client's forget-class accuracy, original vs each route (rows = clients)."""
    columns = _columns(summaries)
    first = columns[0][1]
    clients, classes = _request(summaries)
    rows = {}
    for class_id in classes:
        for pid in first.accuracy.clients:
            name = f"client {pid}" + (" (requesting)" if pid in clients else "")
            if len(classes) > 1:
                name += f" {class_label(class_id)}"
            rows[name] = {"test samples": _before(first).test_count(pid, class_id),
                          "Original": _before(first).class_accuracy(pid, class_id),
                          **{col: s.accuracy.class_accuracy(pid, class_id)
                             for col, s in columns}}
    return pd.DataFrame.from_dict(rows, orient="index")


def table7_clients(summary: PhaseSummary, requesting: Sequence[int],
                   count: int = TABLE7_CLIENTS) -> list[int]:
    """The requesting clients plus the lowest other partition ids, ``count`` in all."""
    others = [p for p in summary.accuracy.clients if p not in requesting]
    chosen = list(requesting) + others[:max(0, count - len(requesting))]
    return sorted(chosen)


def table7_classes(num_classes: int, forget: Sequence[int],
                   limit: int = MAX_CLASSES) -> list[int]:
    """Every class, or (many classes) the forget classes plus the first others up to ``limit``."""
    if num_classes <= limit:
        return list(range(num_classes))
    others = [c for c in range(num_classes) if c not in forget]
    return sorted(set(forget) | set(others[:max(0, limit - len(forget))]))


def table7(summaries: Mapping[str, PhaseSummary], count: int = TABLE7_CLIENTS,
           limit: int = MAX_CLASSES) -> pd.DataFrame:
    """First clients x classes accuracy, before vs each route (rows = (client, label))."""
    columns = _columns(summaries)
    first = columns[0][1]
    clients, classes = _request(summaries)
    rows = {}
    for pid in table7_clients(first, clients, count):
        for class_id in table7_classes(len(first.class_names), classes, limit):
            label = class_label(class_id) + (" (↓)" if class_id in classes else "")
            rows[(f"Client {pid}", label)] = {
                "test samples": _before(first).test_count(pid, class_id),
                "Before": _before(first).class_accuracy(pid, class_id),
                **{col: s.accuracy.class_accuracy(pid, class_id) for col, s in columns}}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index = pd.MultiIndex.from_tuples(frame.index, names=["Client", "Label"])
    return frame


def cost_table(summaries: Mapping[str, PhaseSummary]) -> pd.DataFrame:
    """What each route cost the clients, and its collateral damage: the mean over the
    non-requesting clients of their accuracy drop on their other classes."""
    rows = {}
    for name, summary in _columns(summaries):
        rows[name] = {
            "strategy": summary.strategy,
            "client-epochs": summary.client_epochs,
            "clients trained": len(summary.extra.get("trained_clients", [])),
            "samples trained": int(summary.extra.get("samples_trained", 0)),
            "units zeroed": len(summary.extra.get("zeroed_units", [])),
            "collateral damage (pts)": (float(np.mean(list(damage.values())))
                                        if (damage := summary.collateral_damage)
                                        else np.nan),
            "seconds": summary.seconds,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def verification_table(summaries: Mapping[str, PhaseSummary]) -> pd.DataFrame:
    """Each route's membership-inference efficacy on D_u and backdoor ASR (%), beside the
    original's and the retrained models' mean (docs/verification.md); empty when no run
    measured them."""
    rows = {}
    for name, summary in _columns(summaries):
        found = summary.evaluation(VerificationEvaluation)
        if found is None:
            continue
        row: dict[str, float] = {}
        for title, scores in (("MIA efficacy", found.verification.mia_efficacy),
                              ("backdoor ASR", found.verification.backdoor_asr)):
            if scores is not None:
                row |= {f"{title} (%)": scores.unlearned,
                        f"{title}, original": scores.original,
                        f"{title}, retrained": float(np.mean(scores.retrained))}
        if row:
            rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    """Markdown-friendly copy: flat column names, percent strings."""
    out = frame.copy()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [f"{top}: {sub}" if top else sub for top, sub in out.columns]
    if isinstance(out.index, pd.MultiIndex):
        out = out.reset_index()
        # Show each client's name once, as in the paper.
        first_col = out.columns[0]
        out[first_col] = out[first_col].where(out[first_col] != out[first_col].shift(), "")
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].map(lambda v: "-" if pd.isna(v) else f"{v:.2f}%")
    return out


def table4_markdown(frame: pd.DataFrame) -> str:
    """Table 4 for reading: one row per model (the original, then each route), one column
    per accuracy, the scenario's domains and model on a line above (the CSV keeps the
    paper's one-row shape)."""
    setup = ", ".join(f"{sub}: {frame[(top, sub)].iloc[0]}" for top, sub in frame.columns
                      if top == "")
    measured = [c for c in frame.columns if c[0] != ""]
    rows = list(dict.fromkeys(name for _, name in measured))
    groups = list(dict.fromkeys(group for group, _ in measured))
    table = pd.DataFrame({group: [float(frame[(group, name)].iloc[0])
                                  if (group, name) in frame.columns else float("nan")
                                  for name in rows] for group in groups},
                         index=pd.Index(rows, name=str(frame.index[0])))
    return f"{setup}\n\n{to_markdown(table)}"


def to_markdown(frame: pd.DataFrame, percent: bool = True) -> str:
    """Markdown table (percent cells as ``12.34%``)."""
    if not percent:
        return frame.to_markdown(floatfmt=".2f") + "\n"
    index = not isinstance(frame.index, pd.MultiIndex)
    return _flat(frame).to_markdown(index=index) + "\n"


def figure4(summaries: Mapping[str, PhaseSummary], path: Path) -> Path:
    """Bar charts: global accuracy and requesting client's forget-class accuracy per route."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = _columns(summaries)
    first = columns[0][1]
    clients, classes = _request(summaries)
    names = ["Original"] + [name for name, _ in columns]
    global_acc = [100 * _before(first).global_accuracy] + [
        100 * s.accuracy.global_accuracy for _, s in columns]
    pid, class_id = clients[0], classes[0]
    forget_acc = [_before(first).class_accuracy(pid, class_id)] + [
        s.accuracy.class_accuracy(pid, class_id) for _, s in columns]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = ["#7f7f7f"] + [f"C{i}" for i in range(len(columns))]
    for ax, values, title in ((axes[0], global_acc, "Global accuracy"),
                              (axes[1], forget_acc,
                               f"Client {pid} {class_label(class_id)} accuracy (forgotten)")):
        bars = ax.bar(names, np.nan_to_num(values), color=colors)
        for bar, value in zip(bars, values, strict=True):
            ax.annotate("-" if np.isnan(value) else f"{value:.1f}",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
        ax.tick_params(axis="x", rotation=30)
    scenario = first.training["scenario"]
    fig.suptitle(f"Unlearning routes on {scenario} (request: clients {clients}, "
                 f"classes {classes})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def figure2(summaries: Mapping[str, PhaseSummary], path: Path) -> Path | None:
    """Seed 000 Figure 2: each client's training samples per class (stacked bars,
    coloured by class; the x label names the client's domain). None when the summaries
    predate the recorded class counts."""
    first = next(iter(summaries.values()))
    counts = first.train_class_counts
    if not counts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = sorted(counts, key=int)
    matrix = np.array([counts[p] for p in clients], dtype=float)
    domains = first.client_domains
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(clients)), 4))
    bottom = np.zeros(len(clients))
    cmap = plt.get_cmap("tab20", matrix.shape[1])
    for class_id in range(matrix.shape[1]):
        ax.bar(range(len(clients)), matrix[:, class_id], bottom=bottom, color=cmap(class_id),
               label=first.class_names[class_id])
        bottom += matrix[:, class_id]
    ax.set_xticks(range(len(clients)),
                  [f"C{int(p) + 1}\n{domains.get(p, '')}" for p in clients], fontsize=8)
    ax.set_ylabel("training samples")
    ax.set_title("Data distribution per client (Figure 2)")
    if matrix.shape[1] <= 20:
        ax.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def build_fair_report(run_dirs: Mapping[str, Path], out_dir: Path) -> list[Path]:
    """Write Tables 4, 5/6, 7/8, the cost table, Figures 2 and 4 and ``report.md``.

    Parameters
    ----------
    run_dirs : Mapping[str, Path]
        Route (strategy name, or a label) -> its unlearning phase folder.
    out_dir : Path
        Output folder (created).

    Returns
    -------
    list[Path]
        The files written.
    """
    summaries = load_summaries(run_dirs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clients, classes = _request(summaries)
    first = next(iter(summaries.values()))
    training = first.training
    tables = [
        ("table4_global", "Table 4: global accuracy and the requesting client's forget-class "
         "accuracy, original vs each route (fair protocol: only requesting clients train)",
         table4(summaries), table4_markdown),
        ("table5_forget_class", "Tables 5/6: every client's forget-class accuracy before and "
         "after unlearning", table5(summaries), to_markdown),
        ("table7_per_class", "Tables 7/8: per-class accuracy of the first clients "
         "((↓) = forgotten class)", table7(summaries), to_markdown),
        ("cost", "Cost of each route (client-epochs = local epochs summed over clients)",
         cost_table(summaries), lambda frame: to_markdown(frame, percent=False)),
    ]
    checks = verification_table(summaries)
    if not checks.empty:
        tables.append(("verification", "Verification beyond accuracy: membership inference "
                       "on D_u and the planted backdoor (%)", checks,
                       lambda frame: to_markdown(frame, percent=False)))
    written: list[Path] = []
    sections = [f"# Fair unlearning report: {training['scenario']}\n",
                f"Request: clients {clients} forget classes {classes} "
                f"({', '.join(first.class_names[c] for c in classes)}). "
                f"Runs: {', '.join(f'{k} = {v}' for k, v in run_dirs.items())}.\n"]
    for stem, caption, frame, render in tables:
        csv_path = out_dir / f"{stem}.csv"
        atomic_write_bytes(csv_path, frame.to_csv(float_format="%.4f").encode())
        markdown = render(frame)
        md_path = out_dir / f"{stem}.md"
        atomic_write_bytes(md_path, f"{caption}\n\n{markdown}".encode())
        written += [csv_path, md_path]
        sections.append(f"## {caption}\n\n{markdown}")
    figure = figure4(summaries, out_dir / "figure4_accuracy.png")
    written.append(figure)
    sections.append(f"![Figure 4]({figure.name})\n")
    distribution = figure2(summaries, out_dir / "figure2_distribution.png")
    if distribution is not None:
        written.append(distribution)
        sections.append(f"![Figure 2]({distribution.name})\n")
    report = out_dir / "report.md"
    atomic_write_bytes(report, "\n".join(sections).encode())
    written.append(report)
    return written


def build_report(preset: dict, results: list[dict[str, Path]], out_dir: Path) -> list[Path]:
    """Runner entry point (``experiments.run``): one column per ``[[runs]]`` entry.

    A run's column is its strategy's route name; an optional ``label`` in the run's
    table names it instead (e.g. two ``neuron-zeroing`` runs with different n).
    """
    runs = preset.get("runs", [])
    run_dirs: dict[str, Path] = {}
    for index, paths in enumerate(results):
        if "unlearn" not in paths:
            continue
        spec = runs[index] if index < len(runs) else {}
        strategy = {**preset.get("base", {}), **spec}.get("strategy", f"run{index}")
        label = str(spec.get("label") or strategy)
        if label in run_dirs:
            raise ReportError(f"two runs are labelled {label!r}; give them distinct "
                              "'label' entries in the preset")
        run_dirs[label] = Path(paths["unlearn"])
    return build_fair_report(run_dirs, out_dir)
