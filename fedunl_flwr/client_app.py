"""fedunl ClientApp: routes Message API messages to the NumPyClient's methods."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp

from clients.fedunl_client import FedunlClient
from clients.handlers import MIN_AGGREGATE_SAMPLES, NODE_MINIMUM_SAMPLES, query_policy
from fedunl_flwr import protocol
from fedunl_flwr.config import RunConfig, pyproject_defaults
from fedunl_flwr.data.scenarios import federated_data, get_scenario, load_client_file
from fedunl_flwr.environment import (
    CLIENT_CPUS_ENV,
    RAY_INLINE_BYTES,
    RAY_INLINE_ENV,
    SIMULATION_ENV,
)
from fedunl_flwr.models import SiteModel, build_model, get_device
from fedunl_flwr.protocol import (
    AscentSettings,
    AttributionRequest,
    DataChange,
    EvaluateReply,
    ForgetSelection,
    TrainReply,
)
from fedunl_flwr.records import from_record, state_keys, to_record
from fedunl_flwr.threads import message_threads


def load_run_config(run_config: Mapping[str, Any],
                    overrides: Mapping[str, Any] | None = None,
                    check_methods: bool = True) -> RunConfig:
    """Run-config over the pyproject defaults (``run_simulation`` sends none).

    ``overrides`` (kebab-case keys) come last; tests and scripts that call
    ``run_simulation`` use them in place of ``--run-config``. Clients pass
    ``check_methods=False``: the server checks the methods' keys, and a client never
    imports the method modules.
    """
    return RunConfig.from_mapping({**pyproject_defaults(), **dict(run_config),
                                   **dict(overrides or {})}, check_methods=check_methods)


# One Ray actor serves many virtual clients (500 each with 1,000 clients on 2 cores): keep
# each client's data tensors, so they are not rebuilt for every message, and let all of
# them work with one model per process (every message sets its weights first; an actor
# serves one message at a time). A model each cost 0.6 MB and a random initialisation
# per message once more clients than the cache held were served.
@lru_cache(maxsize=16384)
def _client_for(config: RunConfig, partition_id: int, data_file: str) -> FedunlClient:
    scenario = get_scenario(config.scenario)
    if data_file:
        if config.backdoor_clients.strip():
            raise ValueError("backdoor-clients plants a trigger into simulated clients' "
                             "data; a node with its own data-file does not poison it")
        data = load_client_file(data_file, partition_id)
        num_classes = int(max(data.y_train.max(), data.y_test.max()) + 1)
        class_names = tuple(str(c) for c in range(num_classes))
    else:
        federation = federated_data(config)
        if not 0 <= partition_id < len(federation.clients):
            raise ValueError(f"partition-id {partition_id} out of range: scenario "
                             f"{config.scenario} has {len(federation.clients)} clients")
        data, class_names = federation.clients[partition_id], federation.class_names
    model_name = config.model or scenario.default_model
    return FedunlClient(data, config, model_name, scenario.in_channels, class_names,
                        _shared_model(model_name, scenario.in_channels, len(class_names),
                                      config.model_width, config.model_norm))


@lru_cache(maxsize=8)
def _shared_model(name: str, in_channels: int, num_classes: int, width: int, norm: str
                  ) -> SiteModel:
    return build_model(name, in_channels, num_classes, width, norm=norm).to(get_device())


def is_simulated(node_config: Mapping[str, Any]) -> bool:
    """Whether this node is a virtual client of a fedunl simulation (the experimenter
    owns all its data), not a real SuperNode."""
    return "num-partitions" in node_config and os.environ.get(SIMULATION_ENV) == "1"


@contextmanager
def simulation_environment(client_cpus: float | None = None) -> Iterator[None]:
    """``SIMULATION_ENV`` set for the duration, ``CLIENT_CPUS_ENV`` as ``client_cpus``
    says (None: unset; the in-process engine runs one client at a time with the
    process's threads) and ``RAY_INLINE_ENV`` unless it is set; all restored after."""
    wanted = {SIMULATION_ENV: "1",
              CLIENT_CPUS_ENV: None if client_cpus is None else f"{client_cpus:g}",
              RAY_INLINE_ENV: os.environ.get(RAY_INLINE_ENV, str(RAY_INLINE_BYTES))}
    before = {name: os.environ.get(name) for name in wanted}
    try:
        _set_environment(wanted)
        yield
    finally:
        _set_environment(before)


def _set_environment(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def check_query_allowed(action: str, config: Mapping[str, Any],
                        node_config: Mapping[str, Any]) -> None:
    """Refuse queries that would reveal individual samples, unless the node allows them.

    Threat model: the server (or whoever controls it) may send any model and any config.
    Answers about single samples (true-label probabilities, losses, gradients of a
    handful of samples) under a crafted model reveal their labels. A simulated node
    (:func:`is_simulated`) answers everything: the experimenter owns all data.
    A real SuperNode answers sample-level queries only with node config
    ``allow-evaluation-queries=true``, and only about its own unlearning request, set in
    its node config as ``forget-request`` (``all``: the client leaves;
    ``classes:0,3``; ``samples:1,2,3``), never another selection. Work a method does on
    the node's forget data (e.g. Halimi et al.'s gradient ascent) is its own unlearning:
    it needs no ``allow-evaluation-queries`` but likewise only its own ``forget-request``.
    Each action's policy is registered with its handler (``clients.handlers``).

    Raises
    ------
    PermissionError
        With the reason and the node-config setting that would allow it.
    """
    if is_simulated(node_config):
        return
    policy = query_policy(action)
    if not policy.restricts(config):
        return
    if policy.evaluation_only and not node_config.get("allow-evaluation-queries", False):
        raise PermissionError(
            f"query.{action} answers about individual samples; this SuperNode refuses it "
            "(node config allow-evaluation-queries=true and forget-request=... allow it)")
    written = str(node_config.get("forget-request", ""))
    own = ForgetSelection.parse(written)
    asked = ForgetSelection.from_config(config)
    if not own or asked.normalised() != own.normalised():
        raise PermissionError(f"query.{action} asks about {asked.describe() or 'no samples'!r}, "
                              f"but this SuperNode's own unlearning request is "
                              f"{written if own else 'not set'!r}")


def check_data_view_allowed(client: FedunlClient, config: Mapping[str, Any],
                            node_config: Mapping[str, Any]) -> None:
    """Refuse a message whose data selection a real SuperNode did not choose itself.

    Threat model: a server that names the samples to leave out (``exclude-samples`` of
    all but one sample; ``exclude-classes`` of all but one class) has the node train or
    answer over a set it chose, and reads a label off the reply's loss or sample count; two
    aggregates over S and S plus one sample differ by that sample's loss or gradient. So
    on a real SuperNode the data a message works on follows only the node's own
    ``forget-request``: either all of its data, or all of it without (or, for classes,
    relabelling) its own forget data, and any forget selection a message names must be
    that request. Two views of the data exist, and they differ by the node's whole
    forget set, which must hold at least ``MIN_AGGREGATE_SAMPLES`` samples so that the
    difference of two answers never shows fewer.

    Raises
    ------
    PermissionError
        Naming what the message asked and what the node's request allows.
    """
    if is_simulated(node_config):
        return
    change = DataChange.from_config(config).normalised()
    selection = ForgetSelection.from_config(config).normalised()
    if not change and not selection:
        return
    written = str(node_config.get("forget-request", ""))
    own = ForgetSelection.parse(written).normalised()
    if change and change not in own.data_changes():
        raise PermissionError(
            f"the message changes this SuperNode's training data ({change.encode()}); a "
            f"real SuperNode leaves out or relabels only its own forget-request "
            f"({written or 'not set'!r}), never a selection sent by the server")
    if selection and selection != own:
        raise PermissionError(
            f"the message names the forget data {selection.describe()!r}, but this "
            f"SuperNode's own unlearning request is {written or 'not set'!r}")
    count = len(client.forget_positions(own.encode()))
    if count < MIN_AGGREGATE_SAMPLES:
        raise PermissionError(
            f"this SuperNode's forget-request covers {count} sample(s): answers with and "
            f"without them would differ by fewer than {MIN_AGGREGATE_SAMPLES} samples, so "
            "it works on all of its data only")


#: The work one message may ask of a real SuperNode unless its node config says otherwise:
#: node-config key -> (what is counted, default limit). A crafted server once had a node
#: train 50 local epochs (98 s of its CPU); Riemann steps multiply attribution's cost.
WORK_LIMITS = {"max-local-epochs": ("local epochs", 10),
               "max-attribution-steps": ("attribution steps", 100)}


def requested_work(client: FedunlClient, message_type: str, config: Mapping[str, Any]
                   ) -> dict[str, int]:
    """The work a message asks, keyed by its :data:`WORK_LIMITS` node-config key."""
    if message_type in (MessageType.TRAIN, f"query.{protocol.UCE_DESCENT}"):
        return {"max-local-epochs": client.train_settings(dict(config)).epochs}
    if message_type == f"query.{protocol.PROJECTED_ASCENT}":
        return {"max-local-epochs": AscentSettings.from_config(config).epochs}
    if message_type == f"query.{protocol.ATTRIBUTION}":
        return {"max-attribution-steps": AttributionRequest.from_config(config).steps}
    return {}


def check_work_allowed(work: Mapping[str, int], node_config: Mapping[str, Any]) -> None:
    """Refuse a message that asks a real SuperNode for more work than its node config
    allows (simulated nodes: the experimenter's own budget)."""
    if is_simulated(node_config):
        return
    for key, amount in work.items():
        what, default = WORK_LIMITS[key]
        limit = int(node_config.get(key, default))
        if amount > limit:
            raise PermissionError(f"a message asks for {amount} {what}; this SuperNode runs "
                                  f"at most {limit} (node config {key})")


def node_paths(config: RunConfig, node_config: Mapping[str, Any]) -> RunConfig:
    """``config`` with the client-side paths a real SuperNode's node config sets.

    Simulated nodes (:func:`is_simulated`) share the experimenter's machine and keep the
    run-config's paths. A real SuperNode reads and writes where its
    operator says: node config ``data-dir`` (else ``$FEDUNL_DATA_DIR``), ``results-dir``
    (else ``$FEDUNL_RESULTS_DIR``, else ``./results``) and ``download`` (else false).
    """
    if is_simulated(node_config):
        return config
    return replace(config, data_dir=str(node_config.get("data-dir", "")),
                   results_dir=str(node_config.get("results-dir", "")),
                   download=bool(node_config.get("download", False)))


def get_client(context: Context, overrides: Mapping[str, Any] | None = None
               ) -> FedunlClient:
    """This node's client (cached per process: Ray actors serve many messages)."""
    node = context.node_config
    config = node_paths(load_run_config(context.run_config, overrides, check_methods=False),
                        node)
    return _client_for(config, int(node.get("partition-id", 0)),
                       str(node.get("data-file", "")))


# The one conversion between a message's ArrayRecord and the NumPyClient's weight list.
def _weights_in(message: Message) -> list[np.ndarray] | None:
    arrays = message.content.array_records.get("arrays")
    return None if arrays is None else list(from_record(arrays).values())


def _weights_out(client: FedunlClient, weights: list[np.ndarray]) -> ArrayRecord:
    return to_record(dict(zip(state_keys(client.model), weights, strict=True)))


def _required(weights: list[np.ndarray] | None) -> list[np.ndarray]:
    if weights is None:
        raise ValueError("the message carries no model (ArrayRecord 'arrays')")
    return weights


def _reply(message: Message, content: RecordDict) -> Message:
    return Message(content, reply_to=message)


def _config(message: Message) -> dict:
    return dict(message.content.config_records.get("config", ConfigRecord()))


def build_client_app(overrides: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp; ``overrides`` replace run-config values (for ``run_simulation``)."""
    client_app = ClientApp()

    def answer(action: str):
        def handler(message: Message, context: Context) -> Message:
            config = {**_config(message), NODE_MINIMUM_SAMPLES: 0 if is_simulated(
                context.node_config) else MIN_AGGREGATE_SAMPLES}  # the node's, not the server's
            check_query_allowed(action, config, context.node_config)
            client = get_client(context, overrides)
            check_data_view_allowed(client, config, context.node_config)
            check_work_allowed(requested_work(client, message.metadata.message_type, config),
                               context.node_config)
            with message_threads(config, is_simulated(context.node_config)):
                reply = client.answer_query(action, _weights_in(message), config)
            return _reply(message, reply.to_content())

        return handler

    for action in FedunlClient.query_actions():
        client_app.query(action)(answer(action))

    @client_app.train()
    def train(message: Message, context: Context) -> Message:
        """Local training from the received global model."""
        client = get_client(context, overrides)
        check_work_allowed(requested_work(client, MessageType.TRAIN, _config(message)),
                           context.node_config)
        check_data_view_allowed(client, _config(message), context.node_config)
        with message_threads(_config(message), is_simulated(context.node_config)):
            weights, num_examples, metrics = client.fit(
                _required(_weights_in(message)), _config(message))
        return _reply(message, TrainReply(
            client.partition_id, _weights_out(client, weights),
            num_examples, float(metrics["train-loss"]),
            int(metrics[protocol.LOCAL_EPOCHS])).to_content())

    @client_app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        """Loss, accuracy and per-class counts on the client's test split."""
        client = get_client(context, overrides)
        with message_threads(_config(message), is_simulated(context.node_config)):
            loss, num_examples, metrics = client.evaluate(
                _required(_weights_in(message)), _config(message))
        return _reply(message, EvaluateReply(
            client.partition_id, loss, num_examples, float(metrics["accuracy"]),
            float(metrics["loss-sum"]), tuple(metrics["class-correct"]),
            tuple(metrics["class-total"])).to_content())

    return client_app


app = build_client_app()
