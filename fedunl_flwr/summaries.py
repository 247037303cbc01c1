"""Typed phase summaries: what ``summary.json`` holds, written by strategies, read by reports."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def from_json(cls: type[T], data: typing.Mapping[str, Any]) -> T:
    """Build the dataclass ``cls`` from its JSON form (nested dataclasses included).

    Keys ``cls`` does not declare are ignored; declared keys that are missing take the
    field's default (a missing key without a default is an error naming the key).
    """
    hints = typing.get_type_hints(cls)
    values = {}
    for item in dataclasses.fields(cls):
        if not item.init:
            continue
        if item.name in data:
            values[item.name] = _convert(hints[item.name], data[item.name])
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise ValueError(f"{cls.__name__}: summary lacks {item.name!r}")
    return cls(**values)


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value) if len(inner) == 1 else value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value,
                                                                                 typing.Mapping):
        return from_json(hint, value)
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return [_convert(args[0], v) for v in value]
    return value


def to_json(summary: Any) -> dict:
    """The JSON form of a summary dataclass (``from_json``'s inverse)."""
    return dataclasses.asdict(summary)


def _percent(value: float | None) -> float:
    return math.nan if value is None else 100.0 * float(value)


# --- every phase ----------------------------------------------------------------------
@dataclass(frozen=True)
class AccuracySummary:
    """A model evaluated on every client's test split (fractions; class ids as strings)."""

    global_accuracy: float
    per_client_accuracy: dict[str, float]
    per_client_loss: dict[str, float]
    per_client_class_accuracy: dict[str, dict[str, float | None]]
    per_client_class_counts: dict[str, list[int]] = field(default_factory=dict)

    @property
    def clients(self) -> list[int]:
        """Partition ids, sorted."""
        return sorted(int(p) for p in self.per_client_class_accuracy)

    def class_accuracy(self, pid: int, class_id: int) -> float:
        """Percent accuracy of client ``pid`` on ``class_id``; NaN where it has no sample."""
        return _percent(self.per_client_class_accuracy.get(str(pid), {}).get(str(class_id)))

    def test_count(self, pid: int, class_id: int) -> int:
        """Test samples behind :meth:`class_accuracy` (-1 when not recorded)."""
        counts = self.per_client_class_counts.get(str(pid))
        return int(counts[class_id]) if counts else -1


@dataclass(frozen=True)
class RequestSummary:
    """The unlearning request as the strategy understood it."""

    scope: str
    clients: list[int]
    classes: list[int] = field(default_factory=list)
    samples: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class PhaseSummary:
    """``summary.json`` of a phase: the model's evaluation plus what the strategy added.

    ``accuracy`` is the phase's model on every client (the top-level accuracy keys);
    ``before`` the original model (unlearning phases); ``extra`` everything else the
    strategy wrote, for method-specific reports.
    """

    phase: str
    config: dict
    accuracy: AccuracySummary
    class_names: list[str]
    strategy: str = ""
    request: RequestSummary | None = None
    before: AccuracySummary | None = None
    seconds: float = 0.0
    client_epochs: int = 0
    train_class_counts: dict[str, list[int]] = field(default_factory=dict)
    client_domains: dict[str, str] = field(default_factory=dict)
    collateral_damage: dict[str, float] | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, data: typing.Mapping[str, Any]) -> PhaseSummary:
        """Read the JSON form; the accuracy keys sit at the top level."""
        own = {f.name for f in dataclasses.fields(cls)}
        accuracy_keys = {f.name for f in dataclasses.fields(AccuracySummary)}
        if "phase" not in data:
            raise ValueError("summary lacks 'phase'")
        return from_json(cls, {**data, "accuracy": {k: data[k] for k in accuracy_keys
                                                    if k in data},
                               "extra": {k: v for k, v in data.items()
                                         if k not in own | accuracy_keys}})

    @classmethod
    def load(cls, path: Path) -> PhaseSummary:
        return cls.parse(json.loads(Path(path).read_text()))

    @property
    def training(self) -> dict:
        """The original training's settings (an unlearning key nests them)."""
        return self.config.get("training", self.config)

    def evaluation(self, cls: type[T]) -> T | None:
        """A declared evaluation of the model (e.g. :class:`MemorizationEvaluation`), read
        back from the summary's top-level keys; None when the summary has none."""
        first = dataclasses.fields(cls)[0].name
        return from_json(cls, self.extra) if first in self.extra else None


@dataclass(frozen=True)
class UnlearningEntries:
    """What an unlearning phase writes into its ``summary.json`` besides the unlearned
    model's accuracy (which every phase writes): :meth:`PhaseSummary.parse` reads it back.

    ``figures`` are the method's own (e.g. the clients that trained, FedEraser's retained
    rounds) and ``evaluations`` the dataclasses of its declared evaluations; both are
    written as top-level keys.
    """

    strategy: str
    request: RequestSummary
    train_class_counts: dict[str, list[int]]
    client_domains: dict[str, str]
    seconds: float
    client_epochs: int
    before: AccuracySummary
    global_accuracy_before: float
    global_accuracy_after: float
    collateral_damage: dict[str, float] | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    evaluations: tuple[DataclassInstance, ...] = ()

    def to_json(self) -> dict:
        entries = {"phase": "unlearn", **self.figures}
        for evaluation in self.evaluations:
            entries.update(to_json(evaluation))
        for item in dataclasses.fields(self):
            if item.name not in ("figures", "evaluations"):
                value = getattr(self, item.name)
                if value is not None:
                    entries[item.name] = to_json(value) if dataclasses.is_dataclass(value) \
                        else value
        return entries


# --- seed 001: the Grouped Memorization Evaluation of one unlearned model ----------------
@dataclass(frozen=True)
class ModelScores:
    """One figure (%) of the original, the unlearned and each reference retrained model."""

    original: float
    unlearned: float
    retrained: list[float]


@dataclass(frozen=True)
class DuAccuracy(ModelScores):
    """Accuracy (%) on the unlearning dataset D_u."""


@dataclass(frozen=True)
class TestAccuracy:
    """Test accuracy (%) and the test set it was measured on."""

    test_set: str
    original: float
    unlearned: float
    retrained: list[float]


@dataclass(frozen=True)
class LocalFairness:
    """Local fairness (App. E.2, x10^-3) over the remaining clients."""

    scale: str
    unlearned: float
    retrained: list[float]
    loss_changes_unlearned: dict[str, float]
    clients: list[int]


@dataclass(frozen=True)
class TimeAnalysis:
    """Time/rounds to peak of unlearning and retraining within one round budget.

    ``unlearn`` and ``retrain`` hold ``time_to_peak``, ``rounds_to_peak``,
    ``peak_accuracy``, ``total_seconds`` and the ``curve`` ``[round, seconds, accuracy]``
    (``retrain`` also ``per_seed``).
    """

    peak_tolerance: float
    budget_rounds: int
    unlearn: dict
    retrain: dict
    retrain_measured_in_this_run: bool
    speedup: float | None = None


@dataclass(frozen=True)
class CslAgreement:
    """Agreement of cumulative sample loss with memorization scores (App. H.2)."""

    available: bool
    reason: str = ""
    top_fraction: float | None = None
    cosine: float | None = None
    top_overlap: float | None = None
    rounds: int | None = None


@dataclass(frozen=True)
class NoiseFloor:
    """Retrained vs retrained: the Δ that is noise."""

    compared: str
    accuracy: list[float | None]
    delta: list[float | None]


@dataclass(frozen=True)
class GroupAccuracy:
    """Accuracy (%) per memorization group then on D_u (``group_rows`` order)."""

    original: list[float | None]
    unlearned: list[float | None]
    retrained: list[list[float | None]]


@dataclass(frozen=True)
class MemorizationGroups:
    """The memorization groups of D_u and each model's accuracy on them."""

    num_forget_samples: int
    forget_clients: list[int]
    group_rows: list[str]
    group_sizes: list[int]
    negative_scores: str
    scoring_retrains: list[int]
    reference_retrains: list[int]
    retrain_noise_floor: NoiseFloor | None
    group_accuracy: GroupAccuracy
    mean_score: float
    retrained_models: dict
    evaluation_seconds: float = 0.0

    @property
    def reference_stores(self) -> list[str]:
        """Run-store folders of the reference retrained models."""
        stores = self.retrained_models["stores"]
        return [stores[i] for i in self.reference_retrains]


@dataclass(frozen=True)
class MemorizationEvaluation:
    """Everything seed 001 reports for one unlearned model (top-level keys of its summary)."""

    group_table: list[dict]
    du_accuracy: DuAccuracy
    test_accuracy: TestAccuracy
    local_fairness: LocalFairness
    time_analysis: TimeAnalysis
    csl_agreement: CslAgreement
    memorization: MemorizationGroups


# --- verification beyond accuracy (strategies/verification.py) ----------------------------
@dataclass(frozen=True)
class VerificationChecks:
    """The planted backdoor's attack success rate on triggered test images, and the
    membership-inference attack on D_u (``fedunl_flwr.metrics.verification``); a check
    that could not run is None, with its reason in ``skipped``."""

    backdoor_asr: ModelScores | None
    backdoor_clients: list[int]
    mia_feature: str
    mia_efficacy: ModelScores | None
    mia_threshold_accuracy: ModelScores | None
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VerificationEvaluation:
    """Top-level ``verification`` key of an unlearning summary."""

    verification: VerificationChecks
