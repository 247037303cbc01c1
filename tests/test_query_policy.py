"""Sample-level queries on real SuperNodes: refused unless the node allows them, and then
only about the node's own unlearning request (the label-leak probe of issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from clients.handlers import MIN_AGGREGATE_SAMPLES
from fedunl_flwr.client_app import check_query_allowed, node_paths
from fedunl_flwr.config import RunConfig
from fedunl_flwr.environment import SIMULATION_ENV

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


class RealNode:
    """A default real SuperNode: fedunl's ClientApp over an in-process grid, its node
    config naming its own data file (the MNIST training samples ``keep``, else the first
    40). Each node gets a file of its own: the ClientApp caches clients by file name."""

    made = 0

    def __init__(self, folder, data_dir, keep: np.ndarray | None = None,
                 **node_config) -> None:
        from fedunl_flwr.client_app import build_client_app
        from fedunl_flwr.inprocess import InProcessGrid
        from fedunl_flwr.phases import model_for
        from fedunl_flwr.records import model_to_record

        RealNode.made += 1
        site = folder / f"site-{RealNode.made}.npz"
        with np.load(data_dir / "mnist.npz") as data:
            rows = np.arange(40) if keep is None else keep
            np.savez(site, x_train=data["x_train"][rows],
                     y_train=data["y_train"][rows].astype(np.int64),
                     x_test=data["x_test"][:20], y_test=data["y_test"][:20].astype(np.int64))
            self.labels = data["y_train"][rows].astype(np.int64)
        run_config = {"scenario": "mnist-iid", "model-width": 4}
        self.grid = InProcessGrid(build_client_app(), 1, run_config, [
            {"partition-id": 0, "data-file": str(site), **node_config}])
        self.arrays = model_to_record(model_for(RunConfig.from_mapping(run_config), 10))

    def send(self, message_type: str, config: dict):
        """The node's reply to one message carrying the model and ``config``."""
        from flwr.app import ConfigRecord, Message, RecordDict

        from fedunl_flwr.inprocess import acting_as_server

        content = RecordDict({"arrays": self.arrays, "config": ConfigRecord(config)})
        with acting_as_server(self.grid):
            (reply,) = self.grid.send_and_receive([Message(
                content, dst_node_id=next(iter(self.grid.get_node_ids())),
                message_type=message_type)])
        return reply

    def refusal(self, message_type: str, config: dict) -> str:
        """The error the node answers with ('' when it answered)."""
        reply = self.send(message_type, config)
        return str(reply.error.reason) if reply.has_error() else ""


@pytest.fixture()
def real_node(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv(SIMULATION_ENV, raising=False)
    return lambda keep=None, **node_config: RealNode(tmp_path, data_dir, keep, **node_config)


def test_a_real_supernode_bounds_the_work_a_message_asks(real_node) -> None:
    """The crafted server's ``local-epochs=50`` (98 s of a node's CPU in the probe): a real
    node's ClientApp refuses more local epochs than its node config's
    ``max-local-epochs`` (default 10), in training and in a method's own local work
    (Halimi et al.'s ascent epochs), and more attribution steps than
    ``max-attribution-steps`` (default 100); within them it works."""
    from flwr.app import MessageType

    from fedunl_flwr import protocol
    from fedunl_flwr.client_app import WORK_LIMITS, check_work_allowed

    node = real_node(**{"max-local-epochs": 2, "forget-request": "all"})

    def train(epochs: int) -> str:
        return node.refusal(MessageType.TRAIN, {protocol.SERVER_ROUND: 1,
                                                protocol.LOCAL_EPOCHS: epochs})

    assert "asks for 50 local epochs; this SuperNode runs at most 2" in train(50)
    assert train(2) == ""
    ascent = {"learning-rate": 0.01, "radius": 1.0, "stop-accuracy": 0.1, "batch-size": 8,
              "momentum": 0.0, "clip-norm": 0.0, "forget-all": True}
    assert "asks for 5 local epochs" in node.refusal(
        f"query.{protocol.PROJECTED_ASCENT}", {**ascent, "epochs": 5})
    attribution = {protocol.TOP_N: 3, protocol.SAMPLES_PER_CLASS: 10}
    assert "asks for 1000 attribution steps; this SuperNode runs at most 100" in \
        node.refusal(f"query.{protocol.ATTRIBUTION}", {**attribution, protocol.STEPS: 1000})
    for key, (what, default) in WORK_LIMITS.items():
        check_work_allowed({key: default}, DEPLOYED)  # the default limits
        with pytest.raises(PermissionError, match=f"{default + 1} {what}.*node config {key}"):
            check_work_allowed({key: default + 1}, DEPLOYED)


def test_a_real_supernode_answers_activations_and_attribution_over_ten_samples_a_class(
        data_dir, real_node) -> None:
    """The probes: mean activations over 3 samples of a class, attribution with
    ``samples-per-class=1``. A real node's ClientApp refuses both; a class it holds 10
    times is answered."""
    from fedunl_flwr import protocol

    with np.load(data_dir / "mnist.npz") as data:
        labels = data["y_train"][:2000]
    node = real_node(np.concatenate([np.flatnonzero(labels == 0)[:3],     # 3 of class 0
                                     np.flatnonzero(labels == 1)[:12]]))  # 12 of class 1

    def ask(action: str, config: dict) -> str:
        return node.refusal(f"query.{action}", config)

    assert "class(es) [0] with only [3] sample(s)" in ask(protocol.ACTIVATIONS,
                                                          {protocol.CLASSES: "0"})
    assert ask(protocol.ACTIVATIONS, {protocol.CLASSES: "1"}) == ""
    attribution = {protocol.STEPS: 2, protocol.TOP_N: 3, protocol.CLASSES: "1"}
    assert "at least 10 per class" in ask(protocol.ATTRIBUTION, {
        **attribution, protocol.SAMPLES_PER_CLASS: 1})
    assert ask(protocol.ATTRIBUTION, {**attribution, protocol.SAMPLES_PER_CLASS: 10}) == ""
    # The server cannot lower the node's minimum: the ClientApp sets it.
    assert ask(protocol.ACTIVATIONS, {protocol.CLASSES: "0", "node-minimum-samples": 0})


def _crafted(node: RealNode):
    """The probe's crafted model: every weight 0, classifier bias 0.7 * [0..9], so the loss
    of one sample is a function of its label alone."""
    from fedunl_flwr.records import from_record, to_record

    arrays = {name: np.zeros_like(value) for name, value in from_record(node.arrays).items()}
    bias = [name for name, value in arrays.items() if value.shape == (10,)][-1]
    arrays[bias] = 0.7 * np.arange(10, dtype=arrays[bias].dtype)
    node.arrays = to_record(arrays)
    return node


def test_a_real_supernode_never_trains_on_a_set_the_server_chose(real_node) -> None:
    """Probe 1: ``train`` over all samples but i (the loss names y_i) and the
    ``num-examples`` oracle (all but i and all classes but c: 1 exactly when y_i = c) are
    refused; the node's own request is honoured."""
    from flwr.app import MessageType

    from fedunl_flwr import protocol

    node = _crafted(real_node())
    one_round = {protocol.SERVER_ROUND: 1, protocol.LOCAL_EPOCHS: 1}
    all_but_0 = ",".join(map(str, range(1, 40)))
    assert "never a selection sent by the server" in node.refusal(
        MessageType.TRAIN, {**one_round, "exclude-samples": all_but_0})
    other_classes = ",".join(str(c) for c in range(10) if c != node.labels[0])
    assert "never a selection sent by the server" in node.refusal(
        MessageType.TRAIN, {**one_round, "exclude-samples": all_but_0,
                            "exclude-classes": other_classes})
    # FedAU's training message names the forget data: only the node's own request.
    assert "own unlearning request is 'not set'" in node.refusal(
        MessageType.TRAIN, {**one_round, "forget-samples": "0"})
    # The node that asked to forget its first 12 samples trains without them, and
    # without nothing else.
    own = real_node(**{"forget-request": "samples:" + ",".join(map(str, range(12)))})
    reply = own.send(MessageType.TRAIN, {**one_round, "exclude-samples": ",".join(
        map(str, reversed(range(12))))})
    assert not reply.has_error()
    assert protocol.TrainReply.from_content(reply.content).num_examples == 28
    assert "never a selection" in own.refusal(MessageType.TRAIN, {
        **one_round, "exclude-samples": ",".join(map(str, range(13)))})


def test_two_answers_of_a_real_supernode_never_differ_by_fewer_than_ten_samples(
        data_dir, real_node) -> None:
    """Probe 2: ``local_loss`` / ``mean_gradient`` over S and S plus sample i differ by
    i's loss or gradient. The server cannot name S; the node's own request may be
    left out only when it covers at least 10 samples."""
    from fedunl_flwr import protocol

    node = _crafted(real_node())
    for action in (protocol.LOCAL_LOSS, protocol.MEAN_GRADIENT):
        assert node.refusal(f"query.{action}", {}) == ""  # all 40 samples
        assert "never a selection sent by the server" in node.refusal(
            f"query.{action}", {"exclude-samples": "0"})
    three = real_node(**{"forget-request": "samples:0,1,2"})
    assert "covers 3 sample(s)" in three.refusal(f"query.{protocol.LOCAL_LOSS}",
                                                 {"exclude-samples": "0,1,2"})
    with np.load(data_dir / "mnist.npz") as data:
        labels = data["y_train"][:2000]
    keep = np.concatenate([np.flatnonzero(labels == 0)[:3], np.flatnonzero(labels == 1)[:12],
                           np.flatnonzero(labels > 1)[:25]])
    ones = real_node(keep, **{"forget-request": "classes:1"})
    reply = ones.send(f"query.{protocol.LOCAL_LOSS}", {"exclude-classes": "1"})
    assert protocol.LocalLossReply.from_content(reply.content).num_examples == 28
    zeros = real_node(keep, **{"forget-request": "classes:0"})
    assert "covers 3 sample(s)" in zeros.refusal(f"query.{protocol.LOCAL_LOSS}",
                                                 {"exclude-classes": "0"})
