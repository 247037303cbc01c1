"""Typed run-config: parsing, validation and the hashes that key the run store."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from fedunl_flwr.initialization import INIT_SCHEMES
from fedunl_flwr.methods import TRAIN_ONLY

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: Membership-inference features (``mia-feature``); ``off`` skips the attack.
MIA_FEATURES = ("confidence", "entropy", "m-entropy", "off")


class ConfigError(ValueError):
    """A run-config value is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class RunConfig:
    """Every run-config key of the app (kebab-case in TOML, snake_case here).

    The defaults equal ``[tool.flwr.app.config]`` in ``pyproject.toml`` (a test
    checks it); ``README.md`` documents each key. Keys owned by one unlearning method
    (``fedunl_flwr.methods.Option``) are kept in ``options`` and read with
    :meth:`option`.
    """

    # Scenario and data
    scenario: str = "digits-real-noniid-offline"
    num_clients: int = 0
    dirichlet_alpha: float = 0.5
    samples_per_client: int = 600
    test_samples_per_client: int = 300
    min_test_per_class: int = 10
    data_dir: str = ""
    download: bool = False
    seed: int = 0
    # Model and local training
    model: str = ""
    model_width: int = 0
    model_norm: str = ""
    model_init: str = "pytorch"
    augment: bool = False
    optimizer: str = "adam"
    learning_rate: float = 0.001
    local_epochs: int = 1
    batch_size: int = 32
    # Federation
    num_server_rounds: int = 10
    fraction_train: float = 1.0
    evaluate_every: int = 1
    fraction_evaluate: float = 1.0
    aggregation: str = "weighted"
    target_error: float = 0.0
    reply_timeout: float = 0.0
    # Outputs
    results_dir: str = ""
    # Unlearning
    strategy: str = "fedavg"
    forget_scope: str = "class"
    forget_clients: str = ""
    forget_classes: str = ""
    forget_samples: str = ""
    unlearn_rounds: int = 3
    unlearn_local_epochs: int = 0
    retrain_seeds: int = 1
    heldout_retrains: bool = False
    peak_tolerance: float = 0.0
    # Verification (fedunl_flwr/metrics/verification.py)
    backdoor_clients: str = ""
    backdoor_fraction: float = 0.5
    backdoor_target: int = 0
    mia_feature: str = "confidence"
    # Method-owned keys: sorted (kebab-case key, value) pairs (hashable, like the rest).
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], check_methods: bool = True) -> RunConfig:
        """Build from a run-config mapping (kebab-case keys) and validate it.

        Missing keys take their defaults; unknown keys and wrongly typed values
        raise :class:`ConfigError`. Keys owned by a registered method
        (``fedunl_flwr.methods``) are checked by that method's rule; with
        ``check_methods=False`` (a client: it takes its settings from messages, and must
        not import the method modules) they are kept as given when ``pyproject.toml``
        lists them.
        """
        known = {f.name: f for f in fields(cls) if f.name != "options"}
        kwargs: dict[str, Any] = {}
        options: dict[str, Any] = {}
        owned: dict | None = None  # the registry's keys, looked up once if needed
        for key, value in values.items():
            name = key.replace("-", "_")
            if name in known:
                kwargs[name] = _coerce(key, value, type(getattr(cls, name)))
                continue
            if not check_methods and key in _pyproject_config():
                options[key] = value
                continue
            owned = _method_options() if owned is None else owned
            if key not in owned:
                raise ConfigError(
                    f"unknown run-config key {key!r}; known keys: "
                    f"{', '.join(sorted([*(k.replace('_', '-') for k in known), *owned]))}"
                )
            options[key] = _coerce(key, value, type(owned[key].default))
            try:
                owned[key].validate(options[key])
            except ValueError as err:
                raise ConfigError(str(err)) from err
        config = cls(**kwargs, options=tuple(sorted(options.items())))
        config.validate()
        return config

    def option(self, key: str) -> Any:
        """The value of method-owned run-config ``key`` (its default when not given)."""
        given = dict(self.options)
        if key in given:
            return given[key]
        owned = _method_options()
        if key not in owned:
            raise KeyError(f"no method owns run-config key {key!r}")
        return owned[key].default

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values out of range."""
        checks = [
            (self.num_clients >= 0, "num-clients must be >= 0 (0 = scenario default)"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.dirichlet_alpha > 0, "dirichlet-alpha must be > 0"),
            (self.samples_per_client >= 0, "samples-per-client must be >= 0 (0 = all)"),
            (self.test_samples_per_client >= 0,
             "test-samples-per-client must be >= 0 (0 = all)"),
            (self.min_test_per_class >= 0,
             f"min-test-per-class must be >= 0, got {self.min_test_per_class}"),
            (self.model_width >= 0, "model-width must be >= 0 (0 = model default)"),
            (self.model_norm in ("", "batch", "group"),
             "model-norm must be '', 'batch' or 'group'"),
            (self.model_init in INIT_SCHEMES,
             f"model-init must be one of {sorted(INIT_SCHEMES)}, got {self.model_init!r}"),
            (self.optimizer in ("adam", "sgd"), "optimizer must be 'adam' or 'sgd'"),
            (self.reply_timeout >= 0,
             f"reply-timeout must be >= 0 seconds (0 = no limit), got {self.reply_timeout}"),
            (0.0 <= self.target_error < 1.0,
             f"target-error must be in [0, 1) (0 = fixed rounds), got {self.target_error}"),
            (self.aggregation in ("weighted", "mean"),
             f"aggregation must be 'weighted' or 'mean', got {self.aggregation!r}"),
            (self.learning_rate > 0, "learning-rate must be > 0"),
            (self.local_epochs >= 1, "local-epochs must be >= 1"),
            (self.batch_size >= 1, "batch-size must be >= 1"),
            (self.num_server_rounds >= 1, "num-server-rounds must be >= 1"),
            (0 < self.fraction_train <= 1, "fraction-train must be in (0, 1]"),
            (self.evaluate_every >= 1, "evaluate-every must be >= 1"),
            (0 < self.fraction_evaluate <= 1, "fraction-evaluate must be in (0, 1]"),
            (self.forget_scope in ("client", "class", "samples"),
             "forget-scope must be 'client', 'class' or 'samples'"),
            (self.unlearn_rounds >= 0, "unlearn-rounds must be >= 0"),
            (self.unlearn_local_epochs >= 0,
             "unlearn-local-epochs must be >= 0 (0 = local-epochs)"),
            (0.0 <= self.peak_tolerance < 1.0, "peak-tolerance must be in [0, 1)"),
            (self.retrain_seeds >= 1, "retrain-seeds must be >= 1"),
            (0.0 < self.backdoor_fraction <= 1.0, "backdoor-fraction must be in (0, 1]"),
            (self.backdoor_target >= 0, "backdoor-target must be a class id >= 0"),
            (self.mia_feature in MIA_FEATURES,
             f"mia-feature must be one of {list(MIA_FEATURES)}, got {self.mia_feature!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def per_method(self) -> list[RunConfig]:
        """One config per method of ``strategy``: a comma-separated ``strategy`` (e.g.
        ``'fedmemeraser,not'``) compares several methods on one federation in one run;
        each is its own run with its own key. Raises :class:`ConfigError` for an empty
        or repeated name, or ``fedavg`` in a list (every run trains the original)."""
        names = [name.strip() for name in self.strategy.split(",")]
        if len(names) == 1:
            return [self] if names[0] == self.strategy else [replace(self, strategy=names[0])]
        if "" in names:
            raise ConfigError(f"strategy {self.strategy!r} has an empty name in its list")
        if len(set(names)) < len(names):
            raise ConfigError(f"strategy {self.strategy!r} names a method twice")
        if TRAIN_ONLY in names:
            raise ConfigError(f"strategy {self.strategy!r}: {TRAIN_ONLY!r} cannot be part "
                              "of a list (every run trains the original model)")
        return [replace(self, strategy=name) for name in names]

    # --- derived values -------------------------------------------------------
    def resolved_data_dir(self) -> Path:
        """The dataset folder: ``data-dir``, else ``$FEDUNL_DATA_DIR``, else a user cache."""
        from fedunl_flwr.data.sources import data_dir_from_env

        return data_dir_from_env(self.data_dir or None)

    def resolved_results_dir(self) -> Path:
        """The run-store root: ``results-dir``, else ``$FEDUNL_RESULTS_DIR``, else ./results."""
        root = self.results_dir or os.environ.get("FEDUNL_RESULTS_DIR") or "results"
        return Path(root).expanduser().resolve()

    def training_key(self) -> dict[str, Any]:
        """The settings that determine the original (FedAvg) model."""
        names = ("scenario", "num_clients", "dirichlet_alpha", "samples_per_client",
                 "test_samples_per_client", "min_test_per_class", "seed", "model",
                 "model_width", "model_norm", "model_init", "augment", "aggregation",
                 "target_error", "optimizer",
                 "learning_rate", "local_epochs", "batch_size", "num_server_rounds",
                 "fraction_train")
        values = asdict(self)
        key = {name: values[name] for name in names}
        if not key["target_error"]:  # fixed rounds: the key (and stored phases) of before
            del key["target_error"]
        if not key["min_test_per_class"]:  # no top-up: the key of before
            del key["min_test_per_class"]
        if self.backdoor_clients.strip():  # a planted backdoor trains another original
            key["backdoor"] = {"clients": sorted(set(parse_int_list(
                self.backdoor_clients, "backdoor-clients"))),
                "fraction": self.backdoor_fraction, "target": self.backdoor_target}
        return key

    def run_key(self) -> dict[str, Any]:
        """The settings that determine a whole run (its unlearning key, or its training
        key for ``strategy = fedavg``): the run store's index is keyed by it."""
        if "," in self.strategy:
            raise ConfigError(f"strategy {self.strategy!r} lists several methods: each has "
                              "its own run key (RunConfig.per_method)")
        return self.training_key() if self.strategy == TRAIN_ONLY else self.unlearning_key()

    def unlearning_key(self) -> dict[str, Any]:
        """The settings that determine an unlearning run (includes the training key)."""
        from fedunl_flwr.methods import method_options

        values = asdict(self)
        skip = set(self.training_key()) | {"data_dir", "download", "results_dir",
                                           "evaluate_every", "fraction_evaluate",
                                           "reply_timeout", "options",
                                           "backdoor_clients",
                                           "backdoor_fraction", "backdoor_target"}
        if self.mia_feature == "confidence":  # the default: the key of before
            skip.add("mia_feature")
        key = {"training": self.training_key(),
               **{k: v for k, v in values.items() if k not in skip}}
        # One request, one key: "0,0" and "1,0" name what "0" and "0,1" name.
        for name in ("forget_clients", "forget_classes"):
            key[name] = ",".join(str(v) for v in sorted(set(parse_int_list(
                values[name], name.replace("_", "-")))))
        own = method_options(self.strategy, dict(self.options))
        if own:  # only the chosen method's keys: another method's keys change nothing
            key["options"] = own
        return key


def key_values(key: Mapping[str, Any]) -> dict[str, Any]:
    """A stored phase key (``unlearning_key``, a folder's ``config.json``) as one flat
    mapping of snake_case run-config names (the training settings and method-owned keys
    inlined; the data fingerprint ``data`` left out: it is not run-config)."""
    values = {k: v for k, v in key.items() if k not in ("training", "options", "data")}
    values.update(key.get("training", {}))
    values.update({k.replace("-", "_"): v for k, v in key.get("options", {}).items()})
    return values


def config_hash(key: Mapping[str, Any]) -> str:
    """Short stable hash of a JSON-able mapping."""
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def parse_int_list(text: str, what: str) -> list[int]:
    """Parse ``"0,3"`` into ``[0, 3]``; a clear error names ``what`` on bad input."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [int(item) for item in items]
    except ValueError as err:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from err


def pyproject_defaults() -> dict[str, Any]:
    """The ``[tool.flwr.app.config]`` table (``run_simulation`` gives no run-config)."""
    return dict(_pyproject_config())


@lru_cache(maxsize=1)
def _pyproject_config() -> dict[str, Any]:
    # Read once per process: every client message merges these defaults.
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["tool"]["flwr"]["app"]["config"]


def _method_options() -> dict:
    # Imported here: the registry imports the method packages, which import this module.
    from fedunl_flwr.methods import all_options

    return all_options()


def _coerce(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value
