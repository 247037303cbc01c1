"""The fedunl message protocol: query actions, message config keys, their encoders and decoders.

Strategies (server side) and clients speak only through this module: a strategy builds a
message config with the ``encode`` methods below, a client reads it back with the
``from_config`` class methods. Neither side imports the other.

Train messages carry a :class:`TrainSettings`-like config: ``phase`` (the run-store
phase, e.g. ``train``, ``retrain-0``, ``unlearn``), ``server-round``, optionally
``local-epochs``, plus a :class:`DataChange` (what the client leaves out of or relabels
in its training data). Query messages (``query.<action>``) carry the global model and a
config; those about the forget data D_u carry a :class:`ForgetSelection`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedunl_flwr.config import parse_int_list
from fedunl_flwr.records import number_list, scalar, string_list, to_record
from fedunl_flwr.unlearning.neurons import Entry

# Query actions (``query.<action>`` messages) a fedunl client answers.
DESCRIBE = "describe"            # sizes, label counts, domain, class names
ACTIVATIONS = "activations"      # per-class mean activations (Neuron-Zeroing)
ATTRIBUTION = "attribution"      # per-class top-N attribution entries (FedCCCU)
MEAN_GRADIENT = "mean_gradient"  # mean-loss gradient over D_r (or D_u with DATA=FORGET)
PER_SAMPLE = "per_sample"        # per-sample outputs on D_u (memorization evaluation)
LOCAL_LOSS = "local_loss"        # summed loss over D_r (local fairness)
CSL = "csl"                      # cumulative sample loss of D_u (seed 001 H.2)
FORGET_GAP = "forget_gap"        # accuracy on D_u vs held-out data of D_u's classes

PROJECTED_ASCENT = "projected_ascent"  # Halimi et al.: gradient ascent on D_u
UCE_DESCENT = "uce_descent"            # FedOSD: local descent of the UCE loss on D_u
AUXILIARY_HEAD = "auxiliary_head"      # FedAU: the client's auxiliary head W2


# Message config keys.
PHASE = "phase"
SERVER_ROUND = "server-round"
LOCAL_EPOCHS = "local-epochs"
OPTIMIZER = "optimizer"          # train: overrides run-config optimizer ("adam" / "sgd")
LEARNING_RATE = "learning-rate"  # train: overrides run-config learning-rate
MOMENTUM = "momentum"            # train: SGD momentum (default 0.9)
#: train (original training, FedAU): train the auxiliary head with this gamma, random
#: labels for the forget samples the message's ForgetSelection names.
AUXILIARY_GAMMA = "auxiliary-gamma"
DATA = "data"                    # mean_gradient: "remaining" (default) or "forget";
REMAINING = "remaining"          # per_sample: "forget" (default) or "remaining"
FORGET = "forget"
CLASSES = "classes"              # activations / attribution: which classes
STEPS = "steps"                  # attribution: Riemann steps m
TOP_N = "top-n"                  # attribution: entries per class N
SAMPLES_PER_CLASS = "samples-per-class"  # attribution: samples per class (cap)
#: train (original training) and csl: the training phase whose client-side records (CSL)
#: the client writes or reads, as ``<scenario>/train-<key hash>`` under its results dir.
RECORDS_TO = "records-to"
#: every message: how many messages the server sent with it at once (a simulated client
#: sizes its torch threads by it, ``fedunl_flwr.threads``; real SuperNodes ignore it).
ROUND_MESSAGES = "round-messages"

# Reply metric keys every client reply may carry.
PARTITION_ID = "partition-id"
NUM_EXAMPLES = "num-examples"
#: ``describe`` reply info: a hash of the client's train and test arrays.
DATA_FINGERPRINT = "data-fingerprint"


_RECORDS_FOLDER = re.compile(r"[A-Za-z0-9_.-]+/train-[0-9a-f]{12}")


def records_folder(config: Mapping[str, Any]) -> str | None:
    """The message's ``records-to`` folder (None when absent), checked to be a training
    phase's folder name so that a server cannot point a client at another path."""
    value = config.get(RECORDS_TO)
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _RECORDS_FOLDER.fullmatch(value) \
            or value.startswith("."):
        raise ValueError(f"{RECORDS_TO}={value!r} is not a training phase folder "
                         "(<scenario>/train-<12 hex digits>)")
    return value


def encode_ids(ids: Iterable[int]) -> str:
    """``[0, 3]`` -> ``"0,3"`` (ConfigRecord values are scalars or lists of one type)."""
    return ",".join(str(int(i)) for i in ids)


def decode_ids(text: Any, key: str) -> list[int]:
    """Inverse of :func:`encode_ids`; a clear error names ``key`` on bad input."""
    return parse_int_list(str(text or ""), key)


@dataclass(frozen=True)
class DataChange:
    """What a client changes in its training data for one train message.

    Parameters
    ----------
    exclude_classes : tuple[int, ...]
        Classes left out (retraining without D_u, Delete-Retrain).
    exclude_samples : tuple[int, ...]
        Positions in the training split left out (sample-level requests).
    relabel_classes : tuple[int, ...]
        Classes whose samples get a random other label (Relabel-Poison).
    """

    exclude_classes: tuple[int, ...] = ()
    exclude_samples: tuple[int, ...] = ()
    relabel_classes: tuple[int, ...] = ()

    KEYS = ("exclude-classes", "exclude-samples", "relabel-classes")

    def __bool__(self) -> bool:
        return bool(self.exclude_classes or self.exclude_samples or self.relabel_classes)

    def normalised(self) -> DataChange:
        """Sorted, de-duplicated ids (two changes of the same samples compare equal)."""
        return DataChange(*(tuple(sorted(set(ids))) for ids in (
            self.exclude_classes, self.exclude_samples, self.relabel_classes)))

    def encode(self) -> dict[str, str]:
        """Message config entries (only the non-empty ones)."""
        values = (self.exclude_classes, self.exclude_samples, self.relabel_classes)
        return {key: encode_ids(ids) for key, ids in zip(self.KEYS, values, strict=True) if ids}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DataChange:
        """Read it back from a message config (absent keys: no change)."""
        return cls(*(tuple(decode_ids(config.get(key), key)) for key in cls.KEYS))


@dataclass(frozen=True)
class ForgetSelection:
    """Which of a client's training samples are its forget data D_u.

    Parameters
    ----------
    everything : bool
        Client-level request: the whole training split.
    classes : tuple[int, ...]
        Class-level request: the client's samples of these classes.
    samples : tuple[int, ...]
        Sample-level request: these positions in the training split.
    """

    everything: bool = False
    classes: tuple[int, ...] = ()
    samples: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.everything or self.classes or self.samples)

    def encode(self) -> dict[str, str | bool]:
        """Message config entries (empty for a client without forget data)."""
        if self.everything:
            return {"forget-all": True}
        entries: dict[str, str | bool] = {}
        if self.classes:
            entries["forget-classes"] = encode_ids(self.classes)
        if self.samples:
            entries["forget-samples"] = encode_ids(self.samples)
        return entries

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ForgetSelection:
        """Read it back from a message config."""
        return cls(bool(config.get("forget-all", False)),
                   tuple(decode_ids(config.get("forget-classes"), "forget-classes")),
                   tuple(decode_ids(config.get("forget-samples"), "forget-samples")))

    @classmethod
    def parse(cls, text: str) -> ForgetSelection:
        """A node's own request as written in its node config: ``all``,
        ``classes:0,3`` or ``samples:1,2,3`` (empty: none)."""
        kind, _, ids = str(text).strip().partition(":")
        if kind in ("", "none"):
            return cls()
        if kind == "all":
            return cls(everything=True)
        if kind in ("classes", "samples"):
            values = tuple(sorted(set(decode_ids(ids, f"forget-request {kind}"))))
            return cls(classes=values) if kind == "classes" else cls(samples=values)
        raise ValueError(f"forget-request must be 'all', 'classes:...' or 'samples:...', "
                         f"got {text!r}")

    def normalised(self) -> ForgetSelection:
        """Sorted, de-duplicated ids (two selections of the same samples compare equal)."""
        return ForgetSelection(self.everything, tuple(sorted(set(self.classes))),
                               tuple(sorted(set(self.samples))))

    def data_changes(self) -> tuple[DataChange, ...]:
        """The training-data changes this request allows a node: leaving its forget data
        out, or, for classes, relabelling them (Relabel-Poison). A leaving client
        (``everything``) has no remaining data to train on: none."""
        own = self.normalised()
        if own.classes:
            return (DataChange(exclude_classes=own.classes),
                    DataChange(relabel_classes=own.classes))
        if own.samples:
            return (DataChange(exclude_samples=own.samples),)
        return ()

    def describe(self) -> str:
        """The node-config spelling (:meth:`parse` reads it back)."""
        if self.everything:
            return "all"
        if self.classes:
            return f"classes:{encode_ids(self.classes)}"
        if self.samples:
            return f"samples:{encode_ids(self.samples)}"
        return ""


# --- attribution and activation replies ------------------------------------------------
ACTIVATION_KEY_SEPARATOR = "|"


def activation_key(class_id: int, site: str) -> str:
    """ArrayRecord key of one class's mean activations at one site."""
    return f"{class_id}{ACTIVATION_KEY_SEPARATOR}{site}"


def split_activation_key(key: str) -> tuple[int, str]:
    """Inverse of :func:`activation_key`."""
    class_id, _, site = key.partition(ACTIVATION_KEY_SEPARATOR)
    return int(class_id), site


def encode_entries(lists: Mapping[int, list[Entry]]) -> tuple[dict[str, list], dict[str, list]]:
    """Per-class top-N lists as parallel lists: ``(metrics, info)`` of a reply.

    ``metrics`` holds ``entry-class`` (int), ``entry-unit`` (int) and ``entry-score``
    (float); ``info`` holds ``entry-site`` (str); entry ``i`` of each list belongs
    together. Classes appear in ascending order, each list in its ranked order.
    """
    classes, units, scores, sites = [], [], [], []
    for class_id in sorted(lists):
        for site, unit, score in lists[class_id]:
            classes.append(int(class_id))
            sites.append(str(site))
            units.append(int(unit))
            scores.append(float(score))
    return ({"entry-class": classes, "entry-unit": units, "entry-score": scores},
            {"entry-site": sites})


def decode_entries(metrics: Mapping[str, Any], info: Mapping[str, Any]
                   ) -> dict[int, list[Entry]]:
    """Inverse of :func:`encode_entries` (checks that the lists line up)."""
    classes = [int(c) for c in metrics.get("entry-class", [])]
    units = [int(u) for u in metrics.get("entry-unit", [])]
    scores = [float(s) for s in metrics.get("entry-score", [])]
    sites = [str(s) for s in info.get("entry-site", [])]
    if not len(classes) == len(units) == len(scores) == len(sites):
        raise ValueError(f"attribution reply lists differ in length: {len(classes)} classes, "
                         f"{len(units)} units, {len(scores)} scores, {len(sites)} sites")
    lists: dict[int, list[Entry]] = {}
    for class_id, site, unit, score in zip(classes, sites, units, scores, strict=True):
        lists.setdefault(class_id, []).append((site, unit, score))
    return lists


@dataclass(frozen=True)
class ActivationsRequest:
    """``query.activations`` settings: the classes whose mean activations are asked."""

    classes: tuple[int, ...]

    def encode(self) -> dict[str, str]:
        return {CLASSES: encode_ids(self.classes)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ActivationsRequest:
        classes = tuple(decode_ids(config.get(CLASSES), CLASSES))
        if not classes:
            raise ValueError(f"query {ACTIVATIONS!r} needs config {CLASSES!r}")
        return cls(classes)


@dataclass(frozen=True)
class AttributionRequest:
    """``query.attribution`` settings (FedCCCU), message keys in brackets."""

    steps: int                # [steps] Riemann steps m of the integrated gradients
    top_n: int                # [top-n] entries per class N
    samples_per_class: int    # [samples-per-class] at most this many samples per class
    classes: tuple[int, ...] = ()  # [classes] only these (default: every class held)

    def encode(self) -> dict[str, int | str]:
        entries: dict[str, int | str] = {STEPS: self.steps, TOP_N: self.top_n,
                                         SAMPLES_PER_CLASS: self.samples_per_class}
        if self.classes:
            entries[CLASSES] = encode_ids(self.classes)
        return entries

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AttributionRequest:
        missing = [key for key in (STEPS, TOP_N, SAMPLES_PER_CLASS) if key not in config]
        if missing:
            raise ValueError(f"query {ATTRIBUTION!r} needs config {missing}")
        return cls(int(config[STEPS]), int(config[TOP_N]), int(config[SAMPLES_PER_CLASS]),
                   tuple(decode_ids(config.get(CLASSES), CLASSES)))


@dataclass(frozen=True)
class AscentSettings:
    """``query.projected_ascent`` settings (Halimi et al.), message keys in brackets."""

    learning_rate: float  # [learning-rate] SGD step size
    epochs: int           # [epochs] at most this many passes over the data
    radius: float         # [radius] l2 radius of the ball around the received model
    stop_accuracy: float  # [stop-accuracy] stop once accuracy on the data is <= this
    batch_size: int       # [batch-size]
    momentum: float       # [momentum] SGD momentum
    clip_norm: float      # [clip-norm] gradient norm clip before each step (0 = off)

    KEYS = ("learning-rate", "epochs", "radius", "stop-accuracy", "batch-size", "momentum",
            "clip-norm")

    def encode(self) -> dict[str, float | int]:
        return dict(zip(self.KEYS, (self.learning_rate, self.epochs, self.radius,
                                    self.stop_accuracy, self.batch_size, self.momentum,
                                    self.clip_norm), strict=True))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AscentSettings:
        missing = [key for key in cls.KEYS if key not in config]
        if missing:
            raise ValueError(f"query {PROJECTED_ASCENT!r} needs config {missing}")
        return cls(float(config["learning-rate"]), int(config["epochs"]),
                   float(config["radius"]), float(config["stop-accuracy"]),
                   int(config["batch-size"]), float(config["momentum"]),
                   float(config["clip-norm"]))


# --- typed replies ---------------------------------------------------------------------
class ReplyRecord(Protocol):
    """What every typed reply is: the sender's partition and the two conversions."""

    @property
    def partition_id(self) -> int: ...

    def to_content(self) -> RecordDict: ...

    @classmethod
    def from_content(cls, content: RecordDict) -> Self: ...


# Every reply a client sends is one of these records: the client builds it, the ClientApp
# turns it into the message content once (``to_content``), and the server reads it back
# with ``from_content``. The wire layout: ``metrics`` (MetricRecord), ``info``
# (ConfigRecord, strings), ``arrays`` (ArrayRecord).
def _content(metrics: Mapping[str, Any], info: Mapping[str, Any] | None = None,
             arrays: Mapping[str, np.ndarray] | ArrayRecord | None = None) -> RecordDict:
    content = RecordDict({"metrics": MetricRecord(dict(metrics))})
    if info is not None:
        content["info"] = ConfigRecord(dict(info))
    if arrays is not None:
        content["arrays"] = arrays if isinstance(arrays, ArrayRecord) else \
            to_record(arrays)
    return content


def _metrics(content: RecordDict) -> MetricRecord:
    return content.metric_records["metrics"]


def _ints(content: RecordDict, key: str) -> tuple[int, ...]:
    return tuple(int(v) for v in number_list(_metrics(content), key))


def _floats(content: RecordDict, key: str) -> tuple[float, ...]:
    return tuple(float(v) for v in number_list(_metrics(content), key))


@dataclass(frozen=True)
class DescribeReply:
    """``query.describe``: what the server may know of a client."""

    partition_id: int
    num_train: int
    num_test: int
    train_class_counts: tuple[int, ...]
    domain: str
    class_names: tuple[str, ...]
    fingerprint: str

    def to_content(self) -> RecordDict:
        return _content({PARTITION_ID: self.partition_id, "num-train": self.num_train,
                         "num-test": self.num_test,
                         "train-class-counts": list(self.train_class_counts)},
                        {"domain": self.domain, "class-names": list(self.class_names),
                         DATA_FINGERPRINT: self.fingerprint})

    @classmethod
    def from_content(cls, content: RecordDict) -> DescribeReply:
        metrics, info = _metrics(content), content.config_records["info"]
        return cls(int(scalar(metrics, PARTITION_ID)), int(scalar(metrics, "num-train")),
                   int(scalar(metrics, "num-test")), _ints(content, "train-class-counts"),
                   str(info["domain"]), tuple(string_list(info, "class-names")),
                   str(info[DATA_FINGERPRINT]))


@dataclass(frozen=True)
class TrainReply:
    """A train message's reply: the local model, its sample count and train loss."""

    partition_id: int
    arrays: ArrayRecord
    num_examples: int
    train_loss: float
    local_epochs: int

    def to_content(self) -> RecordDict:
        return _content({"train-loss": self.train_loss, LOCAL_EPOCHS: self.local_epochs,
                         PARTITION_ID: self.partition_id, NUM_EXAMPLES: self.num_examples},
                        arrays=self.arrays)

    @classmethod
    def from_content(cls, content: RecordDict) -> TrainReply:
        metrics = _metrics(content)
        return cls(int(scalar(metrics, PARTITION_ID)), content.array_records["arrays"],
                   int(scalar(metrics, NUM_EXAMPLES)), float(scalar(metrics, "train-loss")),
                   int(scalar(metrics, LOCAL_EPOCHS, 1)))


@dataclass(frozen=True)
class EvaluateReply:
    """An evaluate message's reply: loss and per-class counts on the test split."""

    partition_id: int
    loss: float
    num_examples: int
    accuracy: float
    loss_sum: float
    class_correct: tuple[int, ...]
    class_total: tuple[int, ...]

    def to_content(self) -> RecordDict:
        return _content({"accuracy": self.accuracy, "loss-sum": self.loss_sum,
                         PARTITION_ID: self.partition_id,
                         "class-correct": list(self.class_correct),
                         "class-total": list(self.class_total), "loss": self.loss,
                         NUM_EXAMPLES: self.num_examples})

    @classmethod
    def from_content(cls, content: RecordDict) -> EvaluateReply:
        metrics = _metrics(content)
        return cls(int(scalar(metrics, PARTITION_ID)), float(scalar(metrics, "loss")),
                   int(scalar(metrics, NUM_EXAMPLES)), float(scalar(metrics, "accuracy")),
                   float(scalar(metrics, "loss-sum")), _ints(content, "class-correct"),
                   _ints(content, "class-total"))


@dataclass(frozen=True)
class ActivationsReply:
    """``query.activations``: per class held, the mean activation of every unit."""

    partition_id: int
    classes: tuple[int, ...]
    class_samples: tuple[int, ...]
    means: dict[tuple[int, str], np.ndarray]

    def to_content(self) -> RecordDict:
        return _content({PARTITION_ID: self.partition_id, "classes": list(self.classes),
                         "class-samples": list(self.class_samples)},
                        arrays={activation_key(c, s): v for (c, s), v in self.means.items()})

    @classmethod
    def from_content(cls, content: RecordDict) -> ActivationsReply:
        arrays = content.array_records.get("arrays", ArrayRecord())
        return cls(int(scalar(_metrics(content), PARTITION_ID)), _ints(content, "classes"),
                   _ints(content, "class-samples"),
                   {split_activation_key(k): a.numpy() for k, a in arrays.items()})


@dataclass(frozen=True)
class AttributionReply:
    """``query.attribution`` (FedCCCU): the top-N ``(site, unit, score)`` per class."""

    partition_id: int
    lists: dict[int, list[Entry]]
    num_samples: int
    class_samples: tuple[int, ...]
    seconds: float

    def to_content(self) -> RecordDict:
        metrics, info = encode_entries(self.lists)
        return _content({**metrics, PARTITION_ID: self.partition_id,
                         "num-samples": self.num_samples,
                         "class-samples": list(self.class_samples),
                         "attribution-seconds": self.seconds}, info)

    @classmethod
    def from_content(cls, content: RecordDict) -> AttributionReply:
        metrics = _metrics(content)
        return cls(int(scalar(metrics, PARTITION_ID)),
                   decode_entries(metrics, content.config_records["info"]),
                   int(scalar(metrics, "num-samples")), _ints(content, "class-samples"),
                   float(scalar(metrics, "attribution-seconds")))


@dataclass(frozen=True)
class MeanGradientReply:
    """``query.mean_gradient``: the gradient of the mean loss over the asked data."""

    partition_id: int
    num_samples: int
    gradient: dict[str, np.ndarray]

    def to_content(self) -> RecordDict:
        return _content({PARTITION_ID: self.partition_id, "num-samples": self.num_samples},
                        arrays=self.gradient)

    @classmethod
    def from_content(cls, content: RecordDict) -> MeanGradientReply:
        return cls(int(scalar(_metrics(content), PARTITION_ID)),
                   int(scalar(_metrics(content), "num-samples")),
                   {k: a.numpy() for k, a in content.array_records["arrays"].items()})


@dataclass(frozen=True)
class PerSampleReply:
    """``query.per_sample`` (evaluation only): each forget sample's outputs (each
    remaining training sample's with ``DATA`` = ``remaining``: membership inference)."""

    partition_id: int
    positions: tuple[int, ...]
    true_prob: tuple[float, ...]
    correct: tuple[int, ...]
    loss: tuple[float, ...]
    entropy: tuple[float, ...]
    m_entropy: tuple[float, ...]

    def to_content(self) -> RecordDict:
        return _content({PARTITION_ID: self.partition_id, "positions": list(self.positions),
                         "true-prob": list(self.true_prob), "correct": list(self.correct),
                         "loss": list(self.loss), "entropy": list(self.entropy),
                         "m-entropy": list(self.m_entropy)})

    @classmethod
    def from_content(cls, content: RecordDict) -> PerSampleReply:
        return cls(int(scalar(_metrics(content), PARTITION_ID)), _ints(content, "positions"),
                   _floats(content, "true-prob"), _ints(content, "correct"),
                   _floats(content, "loss"), _floats(content, "entropy"),
                   _floats(content, "m-entropy"))


@dataclass(frozen=True)
class LocalLossReply:
    """``query.local_loss``: the summed loss over the client's remaining data."""

    partition_id: int
    loss_sum: float
    num_examples: int

    def to_content(self) -> RecordDict:
        return _content({PARTITION_ID: self.partition_id, "loss-sum": self.loss_sum,
                         NUM_EXAMPLES: self.num_examples})

    @classmethod
    def from_content(cls, content: RecordDict) -> LocalLossReply:
        metrics = _metrics(content)
        return cls(int(scalar(metrics, PARTITION_ID)), float(scalar(metrics, "loss-sum")),
                   int(scalar(metrics, NUM_EXAMPLES)))


@dataclass(frozen=True)
class ForgetGapReply:
    """``query.forget_gap``: accuracy on the client's forget data D_u and on its held-out
    test data re-weighted to D_u's class mix (FedMemEraser's request-adaptive rho)."""

    partition_id: int
    forget_accuracy: float
    forget_count: int
    heldout_accuracy: float
    heldout_count: int

    def to_content(self) -> RecordDict:
        return _content({PARTITION_ID: self.partition_id,
                         "forget-accuracy": self.forget_accuracy,
                         "forget-count": self.forget_count,
                         "heldout-accuracy": self.heldout_accuracy,
                         "heldout-count": self.heldout_count})

    @classmethod
    def from_content(cls, content: RecordDict) -> ForgetGapReply:
        metrics = _metrics(content)
        return cls(int(scalar(metrics, PARTITION_ID)),
                   float(scalar(metrics, "forget-accuracy")),
                   int(scalar(metrics, "forget-count")),
                   float(scalar(metrics, "heldout-accuracy")),
                   int(scalar(metrics, "heldout-count")))


@dataclass(frozen=True)
class CslReply:
    """``query.csl`` (evaluation only): the forget samples' cumulative training loss."""

    partition_id: int
    available: bool
    positions: tuple[int, ...]
    csl: tuple[float, ...]
    rounds: int

    def to_content(self) -> RecordDict:
        return _content({PARTITION_ID: self.partition_id, "csl-available": int(self.available),
                         "positions": list(self.positions), "csl": list(self.csl),
                         "csl-rounds": self.rounds})

    @classmethod
    def from_content(cls, content: RecordDict) -> CslReply:
        metrics = _metrics(content)
        return cls(int(scalar(metrics, PARTITION_ID)), bool(int(scalar(metrics, "csl-available"))),
                   _ints(content, "positions"), _floats(content, "csl"),
                   int(scalar(metrics, "csl-rounds")))


@dataclass(frozen=True)
class AscentReply:
    """``query.projected_ascent`` (Halimi et al.): the ascended model and how it went."""

    partition_id: int
    arrays: ArrayRecord
    accuracy: float
    distance: float
    epochs: int
    steps: int
    num_samples: int

    def to_content(self) -> RecordDict:
        return _content({PARTITION_ID: self.partition_id, "accuracy": self.accuracy,
                         "distance": self.distance, "epochs": self.epochs, "steps": self.steps,
                         "num-samples": self.num_samples}, arrays=self.arrays)

    @classmethod
    def from_content(cls, content: RecordDict) -> AscentReply:
        metrics = _metrics(content)
        return cls(int(scalar(metrics, PARTITION_ID)), content.array_records["arrays"],
                   float(scalar(metrics, "accuracy")), float(scalar(metrics, "distance")),
                   int(scalar(metrics, "epochs")), int(scalar(metrics, "steps")),
                   int(scalar(metrics, "num-samples")))


@dataclass(frozen=True)
class AuxiliaryHeadReply:
    """``query.auxiliary_head`` (FedAU): the client's auxiliary classification head W2
    (``weight``, ``bias``) as its last round of the original training left it."""

    partition_id: int
    head: ArrayRecord
    last_round: int

    def to_content(self) -> RecordDict:
        return _content({PARTITION_ID: self.partition_id, "last-round": self.last_round},
                        arrays=self.head)

    @classmethod
    def from_content(cls, content: RecordDict) -> AuxiliaryHeadReply:
        metrics = _metrics(content)
        return cls(int(scalar(metrics, PARTITION_ID)), content.array_records["arrays"],
                   int(scalar(metrics, "last-round")))


#: Any reply a client builds (the ClientApp sends ``reply.to_content()``).
Reply = (DescribeReply | TrainReply | EvaluateReply | ActivationsReply | AttributionReply
         | MeanGradientReply | PerSampleReply | LocalLossReply | CslReply | AscentReply
         | AuxiliaryHeadReply)
