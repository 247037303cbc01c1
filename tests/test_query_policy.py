"""Sample-level queries on real SuperNodes: refused unless the node allows them, and then
only about the node's own unlearning request (the label-leak probe of issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from clients.memorization import MIN_AGGREGATE_SAMPLES
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
