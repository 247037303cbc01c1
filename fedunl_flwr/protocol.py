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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fedunl_flwr.config import parse_int_list
from fedunl_flwr.unlearning.neurons import Entry

# Query actions (``query.<action>`` messages) a fedunl client answers.
DESCRIBE = "describe"            # sizes, label counts, domain, class names
ACTIVATIONS = "activations"      # per-class mean activations (Neuron-Zeroing)
ATTRIBUTION = "attribution"      # per-class top-N attribution entries (FedCCCU)
MEAN_GRADIENT = "mean_gradient"  # mean-loss gradient over D_r (or D_u with DATA=FORGET)
PER_SAMPLE = "per_sample"        # per-sample outputs on D_u (memorization evaluation)
LOCAL_LOSS = "local_loss"        # summed loss over D_r (local fairness)
CSL = "csl"                      # cumulative sample loss of D_u (seed 001 H.2)

PROJECTED_ASCENT = "projected_ascent"  # Halimi et al.: gradient ascent on D_u

#: Actions whose answers are about individual samples (see ``client_app.check_query_allowed``).
SAMPLE_LEVEL_ACTIONS = (PER_SAMPLE, CSL)
#: Actions that train on the node's own forget data (only for its own request).
FORGET_DATA_ACTIONS = (PROJECTED_ASCENT,)

# Message config keys.
PHASE = "phase"
SERVER_ROUND = "server-round"
LOCAL_EPOCHS = "local-epochs"
DATA = "data"                    # mean_gradient: "remaining" (default) or "forget"
FORGET = "forget"
CLASSES = "classes"              # activations / attribution: which classes
STEPS = "steps"                  # attribution: Riemann steps m
TOP_N = "top-n"                  # attribution: entries per class N
SAMPLES_PER_CLASS = "samples-per-class"  # attribution: samples per class (cap)

# Reply metric keys every client reply may carry.
PARTITION_ID = "partition-id"
NUM_EXAMPLES = "num-examples"
#: ``describe`` reply info: a hash of the client's train and test arrays.
DATA_FINGERPRINT = "data-fingerprint"


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
class AscentSettings:
    """``query.projected_ascent`` settings (Halimi et al.), message keys in brackets."""

    learning_rate: float  # [learning-rate] SGD step size
    epochs: int           # [epochs] at most this many passes over the data
    radius: float         # [radius] l2 radius of the ball around the received model
    stop_accuracy: float  # [stop-accuracy] stop once accuracy on the data is <= this
    batch_size: int       # [batch-size]

    KEYS = ("learning-rate", "epochs", "radius", "stop-accuracy", "batch-size")

    def encode(self) -> dict[str, float | int]:
        return dict(zip(self.KEYS, (self.learning_rate, self.epochs, self.radius,
                                    self.stop_accuracy, self.batch_size), strict=True))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AscentSettings:
        missing = [key for key in cls.KEYS if key not in config]
        if missing:
            raise ValueError(f"query {PROJECTED_ASCENT!r} needs config {missing}")
        return cls(float(config["learning-rate"]), int(config["epochs"]),
                   float(config["radius"]), float(config["stop-accuracy"]),
                   int(config["batch-size"]))
