"""The cross table: seed 000's routes and seed 001's methods side by side, a table
neither paper has.

One class-level request (the requester's forget-class accuracy, the collateral damage on
the other clients' other classes, global accuracy, backdoor ASR) and one client-level
request (the top memorization group's distance to retraining, test accuracy, MIA
efficacy on D_u, backdoor ASR); each method appears where its scope fits. Rows follow
the registry's order and labels; the verification columns are
``docs/verification.md``'s checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedunl_flwr.methods import all_methods
from fedunl_flwr.store import atomic_write_bytes
from fedunl_flwr.summaries import (
    MemorizationEvaluation,
    ModelScores,
    PhaseSummary,
    VerificationEvaluation,
)

ORIGINAL, RETRAINED = "Original", "Retrained"


def _unlearned(scores: ModelScores | None) -> float:
    return math.nan if scores is None else scores.unlearned


def _checks(summary: PhaseSummary) -> tuple[ModelScores | None, ModelScores | None]:
    found = summary.evaluation(VerificationEvaluation)
    if found is None:
        return None, None
    return found.verification.backdoor_asr, found.verification.mia_efficacy


def _label(summary: PhaseSummary, label: str) -> str:
    return label or all_methods()[summary.strategy].row_label


def _order(summary: PhaseSummary) -> int:
    return all_methods()[summary.strategy].order


def class_level_frame(runs: Sequence[tuple[str, PhaseSummary]]) -> pd.DataFrame:
    """One row per method on the class-level request, then the original and the
    retrained reference (where a run measured them)."""
    rows: dict[str, dict[str, float]] = {}
    reference: dict[str, float] = {}
    for label, summary in sorted(runs, key=lambda item: _order(item[1])):
        request = summary.request
        assert request is not None and summary.before is not None
        cells = [(p, c) for p in request.clients for c in request.classes]
        asr, _ = _checks(summary)
        damage = summary.collateral_damage
        rows[_label(summary, label)] = {
            "forget-class acc. (%)": float(np.mean([summary.accuracy.class_accuracy(p, c)
                                                    for p, c in cells])),
            "collateral damage (pts)": float(np.mean(list(damage.values())))
            if damage else math.nan,
            "global acc. (%)": 100.0 * summary.accuracy.global_accuracy,
            "backdoor ASR (%)": _unlearned(asr),
        }
        reference.setdefault("forget-class acc. (%)", float(np.mean(
            [summary.before.class_accuracy(p, c) for p, c in cells])))
        reference.setdefault("global acc. (%)", 100.0 * summary.before.global_accuracy)
        if asr is not None:
            reference.setdefault("backdoor ASR (%)", asr.original)
            reference.setdefault("retrained ASR", float(np.mean(asr.retrained)))
    if reference:
        rows[ORIGINAL] = {k: v for k, v in reference.items() if k != "retrained ASR"}
        if "retrained ASR" in reference:
            rows[RETRAINED] = {"backdoor ASR (%)": reference["retrained ASR"]}
    return pd.DataFrame.from_dict(rows, orient="index")


def client_level_frame(runs: Sequence[tuple[str, PhaseSummary]]) -> pd.DataFrame:
    """One row per method on the client-level request, then the original and the
    retrained reference (the first memorization group, the test accuracy and the checks
    of the run that measured them first)."""
    rows: dict[str, dict[str, float]] = {}
    original: dict[str, float] = {}
    retrained: dict[str, float] = {}
    for label, summary in sorted(runs, key=lambda item: _order(item[1])):
        memorization = summary.evaluation(MemorizationEvaluation)
        asr, mia = _checks(summary)
        row = {"backdoor ASR (%)": _unlearned(asr), "MIA efficacy (%)": _unlearned(mia)}
        if memorization is not None:
            groups = memorization.memorization.group_accuracy
            top = _top_group(groups.original)
            retrained_top = float(np.mean([g[top] for g in groups.retrained]))
            row |= {"top group Δ (pts)": abs((groups.unlearned[top] or 0.0) - retrained_top),
                    "test acc. (%)": memorization.test_accuracy.unlearned}
            original.setdefault("test acc. (%)", memorization.test_accuracy.original)
            original.setdefault("top group Δ (pts)",
                                abs((groups.original[top] or 0.0) - retrained_top))
            retrained.setdefault("test acc. (%)",
                                 float(np.mean(memorization.test_accuracy.retrained)))
        for scores, name in ((asr, "backdoor ASR (%)"), (mia, "MIA efficacy (%)")):
            if scores is not None:
                original.setdefault(name, scores.original)
                retrained.setdefault(name, float(np.mean(scores.retrained)))
        rows[_label(summary, label)] = row
    for name, values in ((ORIGINAL, original), (RETRAINED, retrained)):
        if values:
            rows[name] = values
    columns = ["top group Δ (pts)", "test acc. (%)", "MIA efficacy (%)", "backdoor ASR (%)"]
    frame = pd.DataFrame.from_dict(rows, orient="index")
    return frame[[c for c in columns if c in frame.columns]]


def _top_group(original: Sequence[float | None]) -> int:
    """The most memorized group that holds samples (its accuracy is not None)."""
    return next(i for i, value in enumerate(original[:-1]) if value is not None)


def build_cross_report(preset: dict, results: list[dict[str, Path]],
                       out_dir: Path) -> list[Path]:
    """Runner entry point (``experiments.run``): every run's unlearning summary goes to
    the table of its request's scope (class or client)."""
    specs = preset.get("runs", [])
    by_scope: dict[str, list[tuple[str, PhaseSummary]]] = {"class": [], "client": []}
    for index, paths in enumerate(results):
        if "unlearn" not in paths:
            continue
        summary = PhaseSummary.load(Path(paths["unlearn"]) / "summary.json")
        if summary.request is not None and summary.request.scope in by_scope:
            label = str(specs[index].get("label", "")) if index < len(specs) else ""
            by_scope[summary.request.scope].append((label, summary))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, sections = [], ["# Cross table: seed 000's routes beside seed 001's methods\n"]
    for scope, build, caption in (
            ("class", class_level_frame, "Class-level request: the requester forgets a class"),
            ("client", client_level_frame, "Client-level request: a client leaves")):
        if not by_scope[scope]:
            continue
        frame = build(by_scope[scope])
        path = out_dir / f"cross_{scope}.csv"
        atomic_write_bytes(path, frame.to_csv(float_format="%.4f").encode())
        written.append(path)
        sections += [f"## {caption}\n", frame.to_markdown(floatfmt=".2f") + "\n"]
    report = out_dir / "cross.md"
    atomic_write_bytes(report, "\n".join(sections).encode())
    return [*written, report]
