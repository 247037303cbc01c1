"""Server-side phases: original training (or loading it) and per-client evaluation."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from logging import INFO

import numpy as np
import pandas as pd
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedunl_flwr import protocol
from fedunl_flwr.config import ConfigError, RunConfig
from fedunl_flwr.data.scenarios import get_scenario, scenario_test_sets
from fedunl_flwr.data.sources import DatasetNotFoundError
from fedunl_flwr.data.tensors import images_to_tensor, labels_to_tensor
from fedunl_flwr.fedavg_train import FedAvgTrain
from fedunl_flwr.federation import (
    Federation,
    arrays_digest,
    evaluation_key,
    evaluations_in,
    raise_on_errors,
    with_data,
)
from fedunl_flwr.metrics.evaluation import Evaluation, per_sample_outputs
from fedunl_flwr.models import SiteModel, build_model, get_device
from fedunl_flwr.records import (
    from_record,
    model_to_record,
    set_weights,
    state_keys,
    to_record,
)
from fedunl_flwr.reports.accuracy import accuracy_frame, accuracy_summary, frame_to_markdown
from fedunl_flwr.seeding import stream_seed
from fedunl_flwr.store import CheckpointError, PhaseStore, RunStore, check_arrays_match
from fedunl_flwr.summaries import to_json
from fedunl_flwr.training_records import (
    RECORDS_FOLDER,
    LastLocalModels,
    RecordSpec,
    records_bytes,
    records_key,
)


@dataclass
class TrainedModel:
    """A phase's global model, the clients' last local models and its progress."""

    arrays: ArrayRecord
    client_arrays: dict[int, ArrayRecord]
    history: list[dict]
    store: PhaseStore
    evaluations: dict[int, Evaluation] = field(default_factory=dict)
    seconds: float = 0.0


def model_for(config: RunConfig, num_classes: int, init_index: int | str | None = None
              ) -> SiteModel:
    """The run's model (scenario default unless run-config ``model`` is set).

    ``init_index`` selects the initialisation stream (``seeding``: purpose ``init``;
    0 = the original model, 1 + j = retrained model j, a string for a method's own
    fresh initialisations); None leaves it uninitialised (a template whose weights are
    overwritten).
    """
    scenario = get_scenario(config.scenario)
    seed = None if init_index is None else stream_seed(config.seed, "init", init_index)
    return build_model(config.model or scenario.default_model, scenario.in_channels,
                       num_classes, config.model_width, seed=seed, norm=config.model_norm,
                       init=config.model_init)


def parameter_names(config: RunConfig, num_classes: int) -> list[str]:
    """The run's model's trainable tensors (state entries that are not buffers)."""
    return [name for name, _ in model_for(config, num_classes).named_parameters()]


def initial_arrays(config: RunConfig, num_classes: int, init_index: int) -> ArrayRecord:
    """Freshly initialised model weights from stream ``(seed, "init", init_index)``."""
    return model_to_record(model_for(config, num_classes, init_index))


def central_test_tensors(config: RunConfig) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The scenario's real test sets as model inputs and labels, one pair per dataset;
    None when the server cannot read them (the data lives only on the SuperNodes).
    Converted once per process and data folder: callers must not modify them."""
    return _central_test_tensors(config.scenario, str(config.resolved_data_dir()),
                                 config.download)


@lru_cache(maxsize=2)
def _central_test_tensors(scenario: str, data_dir: str, download: bool
                          ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    try:
        test_sets = scenario_test_sets(scenario, data_dir, download)
    except (FileNotFoundError, OSError):
        return None
    in_channels = get_scenario(scenario).in_channels
    return [(images_to_tensor(x, in_channels), labels_to_tensor(y)) for _, x, y in test_sets]


#: Per-sample outputs on the central test sets, kept per model (SHA-256 of its arrays) and
#: architecture: in a run of several methods the original and retrained models are scored
#: once, and test accuracy and the MIA's non-members read the same forward pass.
_CENTRAL_OUTPUTS: OrderedDict[tuple, list[dict[str, np.ndarray]]] = OrderedDict()
_CENTRAL_OUTPUTS_KEPT = 16


def check_model_input(config: RunConfig) -> None:
    """Raise ``ConfigError`` when the run's model cannot take the scenario's images (e.g.
    1x1 images through a CNN's pooling), before any client starts: otherwise every
    client fails its first training round with the framework's shape error."""
    scenario = get_scenario(config.scenario)
    try:  # never downloads: a dataset still to fetch is checked when the run loads it
        sets = scenario_test_sets(config.scenario, str(config.resolved_data_dir()), False)
    except DatasetNotFoundError:
        if config.download:
            return
        raise
    num_classes = 1 + max(int(y.max()) for _, _, y in sets if len(y))
    model = model_for(config, num_classes).eval()
    for dataset, x_test, _ in sets:
        try:
            with torch.no_grad():
                model(images_to_tensor(x_test[:2], scenario.in_channels))
        except RuntimeError as err:
            raise ConfigError(
                f"model {config.model or scenario.default_model!r} cannot take the "
                f"{'x'.join(map(str, x_test.shape[1:3]))} images of {dataset} (scenario "
                f"{config.scenario}): {str(err).splitlines()[0]}") from None


def central_test_outputs(config: RunConfig, num_classes: int, arrays: ArrayRecord
                         ) -> list[dict[str, np.ndarray]] | None:
    """``per_sample_outputs`` of ``arrays`` on each of the scenario's real test sets;
    None when the server cannot read them."""
    key = (arrays_digest(arrays), config.scenario, str(config.resolved_data_dir()),
           config.model, config.model_width, config.model_norm, num_classes)
    if key in _CENTRAL_OUTPUTS:
        _CENTRAL_OUTPUTS.move_to_end(key)
        return _CENTRAL_OUTPUTS[key]
    tensors = central_test_tensors(config)
    if tensors is None:
        return None
    model = model_for(config, num_classes).to(get_device())
    set_weights(model, from_record(arrays))
    outputs = [per_sample_outputs(model, x, y) for x, y in tensors]
    _CENTRAL_OUTPUTS[key] = outputs
    if len(_CENTRAL_OUTPUTS) > _CENTRAL_OUTPUTS_KEPT:
        _CENTRAL_OUTPUTS.popitem(last=False)
    return outputs


def central_test_accuracies(config: RunConfig, num_classes: int,
                            models: list[ArrayRecord]) -> list[float] | None:
    """Accuracy of each of ``models`` on the scenario's real test sets, evaluated by the
    server.

    None when the server cannot read the datasets (a deployment whose data lives only
    on the SuperNodes); callers then report the pooled client test splits and say so.
    """
    accuracies = []
    for arrays in models:
        outputs = central_test_outputs(config, num_classes, arrays)
        if outputs is None:
            return None
        correct = np.concatenate([o["correct"] for o in outputs])
        accuracies.append(float(correct.sum()) / max(1, len(correct)))
    return accuracies


def evaluate_clients(grid: Grid, federation: Federation, arrays: ArrayRecord,
                     partition_ids: list[int] | None = None) -> dict[int, Evaluation]:
    """Each client evaluates ``arrays`` on its test split; per-class counts come back.

    Kept per federation (``evaluation_key``): a model that the training strategy's last
    round already had evaluated by these clients is not sent again.
    """
    partition_ids = partition_ids or federation.partition_ids
    key = evaluation_key(arrays, partition_ids)
    if key in federation.answers:
        return dict(federation.answers[key])
    record = RecordDict({"arrays": arrays, "config": ConfigRecord({protocol.SERVER_ROUND: 0})})
    messages = [Message(record, dst_node_id=n, message_type=MessageType.EVALUATE)
                for n in federation.node_ids(partition_ids)]
    replies = list(grid.send_and_receive(messages))
    raise_on_errors(replies, "evaluation", federation.node_ids(partition_ids), federation)
    evaluations = evaluations_in(replies, federation)
    federation.answers[key] = evaluations
    return dict(evaluations)


def write_evaluation(store: PhaseStore, evaluations: dict[int, Evaluation],
                     class_names: list[str], extra: dict) -> pd.DataFrame:
    """accuracy.csv, accuracy.md and summary.json (written last: marks completion)."""
    frame = accuracy_frame(evaluations, class_names)
    store.write_text("accuracy.csv", frame.to_csv(float_format="%.4f"))
    store.write_text("accuracy.md", frame_to_markdown(frame))
    store.write_summary({**extra, **to_json(accuracy_summary(evaluations)),
                         "class_names": class_names, "config": store.key})
    return frame


def save_model_phase(store: PhaseStore, result: TrainedModel) -> None:
    """Global model and per-round metrics (the clients' last local models were written by
    the training's :class:`fedunl_flwr.training_records.LastLocalModels` recorder)."""
    store.write_arrays("global", from_record(result.arrays))
    store.write_text("metrics.csv", pd.DataFrame(result.history).to_csv(index=False))


def _stored_arrays(store: PhaseStore, model: SiteModel, name: str) -> ArrayRecord:
    """``<name>.npz`` of the phase, checked to fit ``model``."""
    keys = state_keys(model)
    arrays = store.read_arrays(name)
    check_arrays_match(arrays, keys, [tuple(model.state_dict()[k].shape) for k in keys],
                       store.path)
    return to_record({k: arrays[k] for k in keys})


def load_client_models(store: PhaseStore, model: SiteModel) -> dict[int, ArrayRecord]:
    """The clients' last local models stored in the phase folder."""
    return {int(path.stem.split("-")[1]): _stored_arrays(store, model, path.stem)
            for path in sorted(store.path.glob("client-*.npz"))}


def checkpoint_files(store: PhaseStore) -> list[str]:
    """The model files of a phase folder: ``global.npz`` and the clients' last models."""
    return ["global.npz", *sorted(p.name for p in store.path.glob("client-*.npz"))]


def load_model_phase(store: PhaseStore, model: SiteModel) -> TrainedModel:
    """Load a completed phase, checking its files against the SHA-256s its summary
    recorded (phases stored before the hashes existed are checked for shape only) and
    that its arrays fit ``model``."""
    summary = store.read_json("summary.json")
    if not isinstance(summary, dict):
        raise CheckpointError(f"{store.path / 'summary.json'} is not a phase summary; move "
                              f"{store.path} away to recompute it")
    store.check_digests(summary.get("checkpoint_sha256", {}))
    metrics = store.path / "metrics.csv"
    if not metrics.exists():
        raise CheckpointError(f"{metrics} is missing; move {store.path} away to recompute it")
    history = pd.read_csv(metrics).to_dict("records") if metrics.stat().st_size > 1 else []
    return TrainedModel(_stored_arrays(store, model, "global"),
                        load_client_models(store, model), history, store,
                        seconds=float(summary.get("seconds", 0.0)))


def run_phase(grid: Grid, federation: Federation, store: PhaseStore, template: SiteModel,
              description: str, produce: Callable[[], TrainedModel],
              summarize: Callable[[TrainedModel], dict],
              evaluate_stored: bool = False) -> TrainedModel:
    """One phase of the run store: load it when complete, else begin -> produce -> save
    -> evaluate once on every client -> write the summary (last: marks completion), all
    under the phase's lock (``PhaseStore.exclusive``).

    ``produce`` returns the phase's model; ``summarize`` (called after the evaluation,
    which it finds in ``trained.evaluations``) returns the summary's own entries.
    ``evaluate_stored`` evaluates a loaded phase too (the caller reports it).
    """
    with store.exclusive():  # another run computing it: wait, then load
        if store.is_complete():
            log(INFO, "fedunl: loading %s from %s", description, store.path)
            loaded = load_model_phase(store, template)
            if evaluate_stored:
                loaded.evaluations = evaluate_clients(grid, federation, loaded.arrays)
            return loaded
        store.begin()
        log(INFO, "fedunl: computing %s into %s", description, store.path)
        trained = produce()
        save_model_phase(store, trained)
        trained.evaluations = evaluate_clients(grid, federation, trained.arrays)
        write_evaluation(store, trained.evaluations, federation.class_names,
                         {**summarize(trained), "checkpoint_sha256":
                          store.file_digests(checkpoint_files(store))})
        return trained


def records_folder_of(run_store: RunStore, store: PhaseStore) -> str:
    """A training phase's folder relative to the run store (the clients' ``records-to``)."""
    return store.path.relative_to(run_store.root).as_posix()


def train_original(grid: Grid, config: RunConfig, federation: Federation,
                   run_store: RunStore, records: tuple[RecordSpec, ...] = ()) -> TrainedModel:
    """FedAvg on all clients, or the stored result of the same configuration.

    ``records`` (what the unlearning method declared it needs) are written during the
    training into the phase's ``records/`` folder; they join the phase key only when
    given, so an original stored without them keeps its folder. The clients record
    their CSL (``records/csl/``) in every original.
    """
    store = run_store.phase(config.scenario, "train",
                            with_data({**config.training_key(), **records_key(records)},
                                      federation.fingerprint))
    recorders = [LastLocalModels(store.path),
                 *(spec.recorder(store.path / RECORDS_FOLDER / spec.folder) for spec in records)]
    template = model_for(config, federation.num_classes)
    strategy = FedAvgTrain(federation, federation.partition_ids, config.num_server_rounds,
                           config.fraction_train, config.evaluate_every, config.seed,
                           fraction_evaluate=config.fraction_evaluate,
                           aggregation=config.aggregation, target_error=config.target_error,
                           recorders=[r for r in recorders if r is not None],
                           client_config=(lambda pid: {k: v for spec in records
                                                       for k, v in spec.train_config(pid).items()})
                           if records else None)

    def produce() -> TrainedModel:
        start = time.perf_counter()
        result = strategy.start(grid, initial_arrays(config, federation.num_classes, 0),
                                num_rounds=config.num_server_rounds,
                                train_config=ConfigRecord(
                                    {protocol.RECORDS_TO: records_folder_of(run_store, store)}))
        return TrainedModel(result.arrays, load_client_models(store, template),
                            strategy.history_rows(), store,
                            seconds=time.perf_counter() - start)

    return run_phase(grid, federation, store, template,
                     f"the original model ({config.num_server_rounds} rounds)", produce,
                     lambda trained: {"phase": "train", "seconds": trained.seconds,
                                      "client_epochs": strategy.client_epochs,
                                      "converged_round": strategy.converged_round,
                                      "records_bytes": records_bytes(store)},
                     evaluate_stored=True)
