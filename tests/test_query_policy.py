"""Sample-level queries on real SuperNodes: refused unless the node allows them, and then
only about the node's own unlearning request (the label-leak probe of issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from clients.handlers import MIN_AGGREGATE_SAMPLES
from fedunl_flwr.client_app import SIMULATION_ENV, check_query_allowed, node_paths
from fedunl_flwr.config import RunConfig

SIMULATED = {"partition-id": 0, "num-partitions": 10}
DEPLOYED = {"partition-id": 0, "data-file": "/data/site0.npz"}


def test_simulated_nodes_answer_evaluation_queries(monkeypatch) -> None:
    monkeypatch.setenv(SIMULATION_ENV, "1")  # as fedunl's simulation launchers set it
    check_query_allowed("per_sample", {"forget-all": True}, SIMULATED)
    check_query_allowed("mean_gradient", {"data": "forget", "forget-samples": "3"}, SIMULATED)


def test_num_partitions_alone_does_not_make_a_real_supernode_simulated(monkeypatch) -> None:
    """An operator who copies Flower's ``num-partitions`` into a real SuperNode's node
    config keeps its protections and its own paths: simulation needs fedunl's launcher."""
    monkeypatch.delenv(SIMULATION_ENV, raising=False)
    copied = {**DEPLOYED, "num-partitions": 2, "data-dir": "/srv/site"}
    with pytest.raises(PermissionError, match="allow-evaluation-queries"):
        check_query_allowed("per_sample", {"forget-all": True}, copied)
    config = node_paths(RunConfig(data_dir="/server/chosen", results_dir="/server/out"), copied)
    assert (config.data_dir, config.results_dir) == ("/srv/site", "")


@pytest.mark.parametrize("action, config", [
    ("per_sample", {"forget-all": True}),      # the crafted-model probe: every label
    ("csl", {"forget-all": True}),
    ("mean_gradient", {"data": "forget", "forget-samples": "3"}),  # one sample's gradient
])
def test_a_real_supernode_refuses_sample_level_queries_by_default(action, config) -> None:
    with pytest.raises(PermissionError, match="allow-evaluation-queries"):
        check_query_allowed(action, config, DEPLOYED)


def test_allowed_nodes_answer_only_about_their_own_request() -> None:
    node = {**DEPLOYED, "allow-evaluation-queries": True, "forget-request": "samples:7,3"}
    check_query_allowed("per_sample", {"forget-samples": "3,7"}, node)
    with pytest.raises(PermissionError, match="own unlearning request is 'samples:7,3'"):
        check_query_allowed("per_sample", {"forget-all": True}, node)
    with pytest.raises(PermissionError, match="asks about 'samples:3'"):
        check_query_allowed("per_sample", {"forget-samples": "3"}, node)
    unset = {**DEPLOYED, "allow-evaluation-queries": True}
    with pytest.raises(PermissionError, match="not set"):
        check_query_allowed("per_sample", {"forget-all": True}, unset)
    # FedMemEraser's rho-rule asks for two aggregates over the node's own D_u only (no
    # allow-evaluation-queries needed); any other selection is refused.
    leaving = {**DEPLOYED, "forget-request": "all"}
    check_query_allowed("forget_gap", {"forget-all": True}, leaving)
    with pytest.raises(PermissionError, match="own unlearning request is 'all'"):
        check_query_allowed("forget_gap", {"forget-samples": "3"}, leaving)


def test_aggregate_queries_are_answered_but_never_about_a_handful(tmp_path) -> None:
    from clients.fedunl_client import FedunlClient
    from fedunl_flwr.config import RunConfig
    from fedunl_flwr.data.scenarios import ClientData
    from fedunl_flwr.records import get_weights

    check_query_allowed("mean_gradient", {}, DEPLOYED)  # the remaining data: allowed
    check_query_allowed("local_loss", {}, DEPLOYED)
    rng = np.random.default_rng(0)
    data = ClientData(0, "synthetic", rng.integers(0, 255, (20, 8, 8), dtype=np.uint8),
                      np.arange(20) % 4, rng.integers(0, 255, (4, 8, 8), dtype=np.uint8),
                      np.arange(4) % 4)
    client = FedunlClient(data, RunConfig(results_dir=str(tmp_path), model="cnn",
                                          model_width=4), "cnn", 1, tuple("abcd"))
    weights = get_weights(client.model)
    keep_one = ",".join(map(str, range(1, 20)))  # exclude all but sample 0
    with pytest.raises(PermissionError, match=f"at least {MIN_AGGREGATE_SAMPLES}"):
        client.query_mean_gradient(weights, {"exclude-samples": keep_one})
    with pytest.raises(PermissionError, match="only 1 sample"):
        client.query_local_loss(weights, {"exclude-samples": keep_one})
    assert client.query_mean_gradient(weights, {}).num_samples == 20


def test_real_nodes_take_their_paths_from_their_own_node_config(monkeypatch) -> None:
    """The server's run-config must not decide where a real SuperNode reads or writes."""
    monkeypatch.setenv(SIMULATION_ENV, "1")
    server = RunConfig(data_dir="/server/data", results_dir="/server/out", download=True)
    assert node_paths(server, SIMULATED) == server  # the experimenter's own machine
    deployed = node_paths(server, {**DEPLOYED, "data-dir": "/site/data"})
    assert (deployed.data_dir, deployed.results_dir, deployed.download) == \
        ("/site/data", "", False)
    assert deployed.seed == server.seed and deployed.scenario == server.scenario


def test_a_real_supernode_bounds_the_local_epochs_a_message_asks(tmp_path, data_dir,
                                                                 monkeypatch) -> None:
    """The crafted server's ``local-epochs=50`` (98 s of a node's CPU in the probe): a real
    node's ClientApp, called with a Flower training message, refuses more than its node
    config's ``max-local-epochs`` (default 10) and trains within it."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    from fedunl_flwr import protocol
    from fedunl_flwr.client_app import (
        DEFAULT_MAX_LOCAL_EPOCHS,
        build_client_app,
        check_work_allowed,
    )
    from fedunl_flwr.inprocess import InProcessGrid, acting_as_server
    from fedunl_flwr.phases import model_for
    from fedunl_flwr.records import model_to_record

    monkeypatch.delenv(SIMULATION_ENV, raising=False)
    with np.load(data_dir / "mnist.npz") as data:
        np.savez(tmp_path / "site.npz", x_train=data["x_train"][:40],
                 y_train=data["y_train"][:40].astype(np.int64), x_test=data["x_test"][:20],
                 y_test=data["y_test"][:20].astype(np.int64))
    run_config = {"scenario": "mnist-iid", "model-width": 4}
    node = {"partition-id": 0, "data-file": str(tmp_path / "site.npz"), "max-local-epochs": 2}
    grid = InProcessGrid(build_client_app(), 1, run_config, [node])
    arrays = model_to_record(model_for(RunConfig.from_mapping(run_config), 10))

    def train(epochs: int) -> Message:
        content = RecordDict({"arrays": arrays, "config": ConfigRecord(
            {protocol.SERVER_ROUND: 1, protocol.LOCAL_EPOCHS: epochs})})
        with acting_as_server(grid):
            (reply,) = grid.send_and_receive([Message(
                content, dst_node_id=next(iter(grid.get_node_ids())),
                message_type=MessageType.TRAIN)])
        return reply

    refused = train(50)
    assert refused.has_error()
    assert "asks for 50 local epochs; this SuperNode runs at most 2" in str(
        refused.error.reason)
    assert not train(2).has_error()
    check_work_allowed(DEFAULT_MAX_LOCAL_EPOCHS, DEPLOYED)  # the default limit
    with pytest.raises(PermissionError, match="max-local-epochs"):
        check_work_allowed(DEFAULT_MAX_LOCAL_EPOCHS + 1, DEPLOYED)


def test_a_real_supernode_answers_activations_and_attribution_over_ten_samples_a_class(
        tmp_path, data_dir, monkeypatch) -> None:
    """The probes: mean activations over 3 samples of a class, attribution with
    ``samples-per-class=1``. A real node's ClientApp refuses both; a class it holds 10
    times is answered."""
    from flwr.app import ConfigRecord, Message, RecordDict

    from fedunl_flwr import protocol
    from fedunl_flwr.client_app import build_client_app
    from fedunl_flwr.inprocess import InProcessGrid, acting_as_server
    from fedunl_flwr.phases import model_for
    from fedunl_flwr.records import model_to_record

    monkeypatch.delenv(SIMULATION_ENV, raising=False)
    with np.load(data_dir / "mnist.npz") as data:
        labels = data["y_train"][:2000].astype(np.int64)
        keep = np.concatenate([np.flatnonzero(labels == 0)[:3],   # 3 of class 0
                               np.flatnonzero(labels == 1)[:12]])  # 12 of class 1
        np.savez(tmp_path / "site.npz", x_train=data["x_train"][keep], y_train=labels[keep],
                 x_test=data["x_test"][:20], y_test=data["y_test"][:20].astype(np.int64))
    run_config = {"scenario": "mnist-iid", "model-width": 4}
    grid = InProcessGrid(build_client_app(), 1, run_config,
                         [{"partition-id": 0, "data-file": str(tmp_path / "site.npz")}])
    arrays = model_to_record(model_for(RunConfig.from_mapping(run_config), 10))

    def ask(action: str, config: dict) -> Message:
        content = RecordDict({"arrays": arrays, "config": ConfigRecord(config)})
        with acting_as_server(grid):
            (reply,) = grid.send_and_receive([Message(
                content, dst_node_id=next(iter(grid.get_node_ids())),
                message_type=f"query.{action}")])
        return reply

    few = ask(protocol.ACTIVATIONS, {protocol.CLASSES: "0"})
    assert few.has_error() and "class(es) [0] with only [3] sample(s)" in str(few.error.reason)
    assert not ask(protocol.ACTIVATIONS, {protocol.CLASSES: "1"}).has_error()
    attribution = {protocol.STEPS: 2, protocol.TOP_N: 3, protocol.CLASSES: "1"}
    one = ask(protocol.ATTRIBUTION, {**attribution, protocol.SAMPLES_PER_CLASS: 1})
    assert one.has_error() and "at least 10 per class" in str(one.error.reason)
    assert not ask(protocol.ATTRIBUTION, {**attribution,
                                          protocol.SAMPLES_PER_CLASS: 10}).has_error()
    # The server cannot lower the node's minimum: the ClientApp sets it.
    assert ask(protocol.ACTIVATIONS, {protocol.CLASSES: "0",
                                      "node-minimum-samples": 0}).has_error()
