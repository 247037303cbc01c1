"""The server's averaging: weighted (FedAvg) or the unweighted mean (seed 001 eq. 13-14),
in partition-id order whatever order the replies arrive in."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import cast

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedunl_flwr import protocol
from fedunl_flwr.aggregation import fedavg_mean
from fedunl_flwr.config import ConfigError, RunConfig
from fedunl_flwr.fedavg_train import FedAvgTrain, TrainingDiverged
from fedunl_flwr.federation import ClientError, ClientInfo, Federation
from fedunl_flwr.protocol import EvaluateReply, TrainReply
from fedunl_flwr.records import model_to_record, scalar, to_record


def federation(n: int) -> Federation:
    return Federation({p: ClientInfo(p, 100 + p, 10, 5, (5, 5)) for p in range(n)}, ["a", "b"])


class Reply:
    """A client's train reply as the strategy reads it (a Flower Message needs a run)."""

    def __init__(self, content: RecordDict) -> None:
        self.content = content
        pid = int(scalar(content.metric_records["metrics"], "partition-id"))
        self.metadata = type("Meta", (), {"src_node_id": 100 + pid})()

    def has_error(self) -> bool:
        return False


def as_messages(*fakes: object) -> list[Message]:
    """Fake replies where the code takes Messages (it reads only what the fakes have)."""
    return cast(list[Message], list(fakes))


#: Where a Grid is passed but never used.
NO_GRID = cast(Grid, None)


def reply(pid: int, value: float, examples: int, loss: float | None = None) -> Reply:
    return Reply(TrainReply(pid, ArrayRecord({"w": Array(np.full((2,), value,
                                                                  dtype=np.float32))}),
                            examples, value if loss is None else loss, 1).to_content())


@pytest.mark.parametrize("aggregation, expected", [
    ("weighted", (1.0 * 10 + 4.0 * 30) / 40),
    ("mean", (1.0 + 4.0) / 2),
])
def test_weighted_and_unweighted_mean(aggregation: str, expected: float) -> None:
    strategy = FedAvgTrain(federation(2), [0, 1], 1, aggregation=aggregation)
    arrays, metrics = strategy.aggregate_train(1, as_messages(reply(0, 1.0, 10),
                                                              reply(1, 4.0, 30)))
    assert arrays is not None and metrics is not None
    np.testing.assert_allclose(arrays["w"].numpy(), [expected, expected], rtol=1e-6)
    assert metrics["train-loss"] == pytest.approx(expected)
    assert set(metrics) == {"train-loss"}  # no averaged partition ids or epochs


def test_arrival_order_does_not_change_the_sum() -> None:
    values = [0.1, 1e7, -1e7, 0.3, 0.7]
    replies = [reply(p, v, 1, loss=0.5) for p, v in enumerate(values)]
    first = FedAvgTrain(federation(5), list(range(5)), 1, aggregation="mean")
    second = FedAvgTrain(federation(5), list(range(5)), 1, aggregation="mean")
    a, _ = first.aggregate_train(1, as_messages(*replies))
    b, _ = second.aggregate_train(1, as_messages(*reversed(replies)))
    assert a is not None and b is not None
    assert np.array_equal(a["w"].numpy(), b["w"].numpy())


def test_fedavg_mean_is_flowers_aggregate_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    models = {pid: {"conv": rng.standard_normal((3, 4)).astype(np.float32),
                    "bias": rng.standard_normal(5).astype(np.float32)} for pid in (4, 0, 7)}
    weights = {4: 60.0, 0: 17.0, 7: 3.0}
    flower = aggregate_arrayrecords(
        [RecordDict({"arrays": to_record(models[pid]),
                     "metrics": MetricRecord({"weight": weights[pid]})})
         for pid in sorted(models)], "weight")
    ours = fedavg_mean(models, weights)
    for name in ("conv", "bias"):
        assert ours[name].dtype == np.float32
        assert np.array_equal(ours[name], flower[name].numpy())
    # by hand: (2 * 1 + 6 * 3) / 4
    assert fedavg_mean({0: {"w": np.array([2.0])}, 1: {"w": np.array([6.0])}},
                       {0: 1.0, 1: 3.0})["w"].tolist() == [5.0]
    with pytest.raises(ValueError, match="sum to zero"):
        fedavg_mean({0: {"w": np.array([2.0])}}, {0: 0.0})


@pytest.mark.parametrize("loss, value, message", [
    (float("nan"), 1.0, "train loss nan"),
    (3.8e21, 1.0, "train loss 3.8e\\+21"),
    (0.5, float("inf"), "non-finite w"),
])
def test_a_diverged_client_stops_the_phase(loss: float, value: float, message: str) -> None:
    strategy = FedAvgTrain(federation(2), [0, 1], 1)
    with pytest.raises(TrainingDiverged, match=f"train round 1, client 1: .*{message}"):
        strategy.aggregate_train(1, as_messages(reply(0, 1.0, 10),
                                                reply(1, value, 10, loss=loss)))


def test_unknown_aggregation_is_rejected() -> None:
    with pytest.raises(ValueError, match="aggregation"):
        FedAvgTrain(federation(2), [0, 1], 1, aggregation="median")


def test_sampling_with_fraction_below_one_is_seeded_and_sized() -> None:
    strategy = FedAvgTrain(federation(10), list(range(10)), 3, fraction_train=0.3, seed=4)
    again = FedAvgTrain(federation(10), list(range(10)), 3, fraction_train=0.3, seed=4)
    rounds = [strategy.sample_participants(r) for r in (1, 2, 3)]
    assert rounds == [again.sample_participants(r) for r in (1, 2, 3)]
    assert all(len(r) == 3 and r == sorted(set(r)) for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # a new sample each round


def test_fraction_evaluate_samples_the_rounds_before_the_last_and_leaves_training_alone(
        ) -> None:
    """fraction-evaluate: a seeded 20% of the clients evaluate in rounds 1 and 2 of 3, all
    of them in round 3; its own stream, so the training sample is what it was."""

    def evaluated(strategy: FedAvgTrain, server_round: int) -> list[int]:
        return strategy.sample_evaluators(server_round)

    sampled = FedAvgTrain(federation(10), list(range(10)), 3, fraction_train=0.3, seed=4,
                          fraction_evaluate=0.2)
    rounds = [evaluated(sampled, r) for r in (1, 2, 3)]
    assert [len(r) for r in rounds] == [2, 2, 10] and rounds[0] != rounds[1]
    again = FedAvgTrain(federation(10), list(range(10)), 3, seed=4, fraction_evaluate=0.2)
    assert [evaluated(again, r) for r in (1, 2)] == rounds[:2]
    plain = FedAvgTrain(federation(10), list(range(10)), 3, fraction_train=0.3, seed=4)
    assert [plain.sample_participants(r) for r in (1, 2, 3)] == [
        sampled.sample_participants(r) for r in (1, 2, 3)]
    assert evaluated(plain, 1) == list(range(10))
    with pytest.raises(ConfigError, match=r"fraction-evaluate must be in \(0, 1\]"):
        RunConfig.from_mapping({"fraction-evaluate": 0.0})


class Failed:
    """An error reply as the SuperLink makes it for a lost node (its own id as source)."""

    def __init__(self, reason: str) -> None:
        self.metadata = type("Meta", (), {"src_node_id": 1})()
        self.error = type("Error", (), {"reason": reason})()

    def has_error(self) -> bool:
        return True


def test_a_lost_client_is_named_by_partition_and_node_id() -> None:
    from fedunl_flwr.federation import ClientError, raise_on_errors

    fed = federation(3)
    ok = [reply(0, 1.0, 1), reply(2, 1.0, 1)]
    for r, pid in zip(ok, (0, 2), strict=True):
        r.metadata = type("Meta", (), {"src_node_id": 100 + pid})()
    with pytest.raises(ClientError, match=r"unlearn round 2 failed \(2 of 3 replied\): no valid "
                                          r"reply from partition 1 \(node 101\); errors: "
                                          r"Node Unavailable"):
        raise_on_errors(as_messages(*ok, Failed("Node Unavailable")), "unlearn round 2",
                        fed.node_ids([0, 1, 2]), fed)
    # A reply that never came is as much an error as an error reply.
    with pytest.raises(ClientError, match=r"2 of 3 replied.*partition 1 \(node 101\)"):
        raise_on_errors(as_messages(*ok), "evaluation", fed.node_ids([0, 1, 2]), fed)
    raise_on_errors(as_messages(*ok), "evaluation", fed.node_ids([0, 2]), fed)  # all replied


def eval_reply(pid: int, correct: int, total: int) -> Reply:
    return Reply(EvaluateReply(pid, 0.0, total, correct / max(1, total), 0.0, (correct, 0),
                               (total, 0)).to_content())


def test_convergence_rule_stops_at_the_first_round_below_epsilon(monkeypatch) -> None:
    """Seed 000 §3.1: train until the validation error falls below epsilon; T0 recorded;
    later rounds of Flower's loop send nothing."""
    from flwr.app import ConfigRecord
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # messages are built outside a run
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)

    fed = federation(2)
    strategy = FedAvgTrain(fed, [0, 1], 10, evaluate_every=5, target_error=0.2)
    arrays = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    accuracies = [(6, 10), (7, 10), (9, 10), (10, 10)]  # errors .4 .3 .1 0
    for server_round, (correct, total) in enumerate(accuracies, start=1):
        sent = strategy.configure_train(server_round, arrays, ConfigRecord(), NO_GRID)
        if server_round <= 3:
            assert len(list(sent)) == 2
            strategy.aggregate_train(server_round, as_messages(reply(0, 1.0, 1), reply(1, 1.0, 1)))
            # every round is evaluated under the rule, whatever evaluate-every says
            assert list(strategy.configure_evaluate(server_round, arrays, ConfigRecord(),
                                                    NO_GRID))
            strategy.aggregate_evaluate(server_round, as_messages(eval_reply(0, correct, total),
                                                                  eval_reply(1, correct, total)))
        else:
            assert list(sent) == [] and strategy.aggregate_train(server_round, []) == (None, None)
            assert list(strategy.configure_evaluate(server_round, arrays, ConfigRecord(),
                                                    NO_GRID)) == []
    assert strategy.converged_round == 3
    assert [row["round"] for row in strategy.history_rows()] == [1, 2, 3]


def test_a_simulation_with_too_few_nodes_fails_within_seconds() -> None:
    import time

    from fedunl_flwr.federation import wait_for_nodes

    class InMemoryGrid:  # the name Flower's simulation grid has
        def get_node_ids(self):
            return [1, 2]

    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"expected 9 clients, 2 connected.*"
                                           r"num-supernodes=9"):
        wait_for_nodes(cast(Grid, InMemoryGrid()), 9, timeout=0.5)
    assert time.monotonic() - start < 5
    assert wait_for_nodes(cast(Grid, InMemoryGrid()), 2) == [1, 2]


def test_eta_is_readable() -> None:
    from fedunl_flwr.federation import format_eta

    assert format_eta(12.4) == "12 s"
    assert format_eta(185) == "3 min 05 s"
    assert format_eta(3720) == "1 h 02 min"
    assert format_eta(-3) == "0 s"


@pytest.mark.simulation
def test_a_client_failing_mid_training_is_named_and_nothing_is_stored(tmp_path, data_dir,
                                                                       monkeypatch) -> None:
    """A real Flower/Ray simulation in which partition 1 raises in its round-2 training:
    the run stops naming the phase, the round, the partition and its node, with the
    reply count, and leaves no phase that looks complete."""
    from flwr.simulation import run_simulation

    from fedunl_flwr.client_app import build_client_app
    from fedunl_flwr.environment import SIMULATION_ENV
    from fedunl_flwr.server_app import build_server_app

    overrides = {"scenario": "mnist-iid", "num-clients": 3, "samples-per-client": 60,
                 "test-samples-per-client": 20, "num-server-rounds": 3, "model": "cnn",
                 "model-width": 4, "results-dir": str(tmp_path), "data-dir": str(data_dir)}
    client_app = build_client_app(overrides)
    train = client_app._registered_funcs["train.default"]  # wrap Flower's registered train handler

    def failing_train(message, context):
        if (int(context.node_config["partition-id"]) == 1
                and int(message.content["config"]["server-round"]) == 2):
            raise RuntimeError("injected failure")
        return train(message, context)

    client_app._registered_funcs["train.default"] = failing_train
    monkeypatch.setenv(SIMULATION_ENV, "1")  # what experiments.simulate sets for Ray's workers
    with pytest.raises(ClientError) as failure:
        run_simulation(build_server_app(overrides), client_app, num_supernodes=3,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    message = str(failure.value)
    assert message.startswith("train round 2 failed (2 of 3 replied): no valid reply from "
                              "partition 1 (node ")
    assert message.endswith("Message: injected failure'>")  # one line, no Ray traceback
    assert "\n" not in message
    assert not list(tmp_path.rglob("summary.json"))


def test_long_queries_log_each_reply_with_an_eta(monkeypatch) -> None:
    """A fake grid (the property needed: replies arriving over several pulls) whose
    three replies arrive one per pull; every arrival is logged with count and ETA."""
    from types import SimpleNamespace

    from fedunl_flwr import federation

    class SlowGrid:
        def __init__(self) -> None:
            self.queue = [[SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i))]
                          for i in ("a", "b", "c")]

        def push_messages(self, messages):
            return ["a", "b", "c"]

        def pull_messages(self, ids):
            assert ids  # never pulls once everything arrived
            return self.queue.pop(0) if self.queue else []

    lines = []
    monkeypatch.setattr(federation, "PROGRESS_AFTER", 0.0)
    monkeypatch.setattr(federation, "log", lambda level, text, *args: lines.append(text % args))
    replies = federation.send_and_receive_with_progress(cast(Grid, SlowGrid()),
                                                        as_messages(1, 2, 3), "query.attribution")
    assert [r.metadata.reply_to_message_id for r in replies] == ["a", "b", "c"]
    assert [line.split(" | ")[0] for line in lines] == [
        f"fedunl query.attribution: {k}/3 client(s) replied" for k in (1, 2, 3)]
    assert lines[0].endswith("ETA 0 s") and "ETA" in lines[-1]


def test_reply_timeout_also_ends_a_querys_wait(monkeypatch) -> None:
    """A query whose third client never answers returns the two replies after
    ``reply-timeout`` (its caller then names the missing client)."""
    from types import SimpleNamespace

    from fedunl_flwr import federation
    from fedunl_flwr.federation import RunGrid

    class SilentThird:
        def __init__(self) -> None:
            self.queue = [[SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i))]
                          for i in ("a", "b")]

        def push_messages(self, messages):
            return ["a", "b", "c"]

        def pull_messages(self, ids):
            return self.queue.pop(0) if self.queue else []

    monkeypatch.setattr(federation, "log", lambda *args: None)
    grid = RunGrid(cast(Grid, SilentThird()), 0.5)
    messages = as_messages(*(SimpleNamespace(content=RecordDict()) for _ in range(3)))
    replies = federation.send_and_receive_with_progress(grid, messages, "query.x")
    assert [r.metadata.reply_to_message_id for r in replies] == ["a", "b"]


def test_each_message_says_how_many_were_sent_with_it() -> None:
    """The run's grid writes the batch size into every message's config (a simulated
    client sizes its torch threads by it), on both ways a batch goes out."""
    from types import SimpleNamespace

    from fedunl_flwr.federation import RunGrid

    class Recording:
        def push_messages(self, messages):
            return [dict(m.content.config_records["config"]) for m in messages]

        def send_and_receive(self, messages, *, timeout=None):
            return self.push_messages(messages)

    shared = ConfigRecord({"phase": "train"})  # Flower's strategies share one record
    batch = as_messages(*(SimpleNamespace(content=RecordDict({"config": shared}))
                          for _ in range(3)))
    grid = RunGrid(cast(Grid, Recording()), 0)
    assert list(grid.send_and_receive(batch)) == [{"phase": "train",
                                                   protocol.ROUND_MESSAGES: 3}] * 3
    alone = as_messages(SimpleNamespace(content=RecordDict()))
    assert list(grid.push_messages(alone)) == [{protocol.ROUND_MESSAGES: 1}]


def test_a_reply_is_the_partition_of_the_node_that_sent_it() -> None:
    """A client must not be trusted about who it is: the sending node decides, and a
    reply claiming another node's partition is refused."""
    strategy = FedAvgTrain(federation(2), [0, 1], 1)
    honest, impostor = reply(1, 4.0, 30), reply(1, 1.0, 10)
    impostor.metadata = type("Meta", (), {"src_node_id": 100})()  # node of partition 0
    with pytest.raises(ClientError, match=r"node 100 \(partition 0\) replied as partition 1"):
        strategy.aggregate_train(1, as_messages(impostor, honest))
    stranger = reply(0, 1.0, 10)
    stranger.metadata = type("Meta", (), {"src_node_id": 999})()
    with pytest.raises(ClientError, match="node 999, which is not in the federation"):
        strategy.aggregate_train(1, as_messages(stranger))


def test_evaluation_queries_are_answered_once_per_federation(monkeypatch) -> None:
    """``memo``: the same evaluation query (model, clients, config) is sent once; another
    model, config or client set is sent again; queries without ``memo`` always are."""
    from flwr.supercore.task_identity import TaskIdentity

    from fedunl_flwr.federation import query_clients
    from fedunl_flwr.protocol import LOCAL_LOSS, LocalLossReply

    for field in ("_run_id", "_node_id", "_task_id"):  # messages are built outside a run
        monkeypatch.setattr(TaskIdentity, field, 1)

    class CountingGrid:
        """Answers each query.local_loss with the sum of the model's weights."""

        def __init__(self) -> None:
            self.sent: list[Message] = []
            self.replies: dict[str, object] = {}

        def push_messages(self, messages):
            ids = []
            for message in messages:
                self.sent.append(message)
                pid = message.metadata.dst_node_id - 100
                total = float(message.content["arrays"]["w"].numpy().sum())
                answer = Reply(LocalLossReply(pid, total, 10).to_content())
                answer.metadata.reply_to_message_id = f"m{len(self.sent)}"
                self.replies[f"m{len(self.sent)}"] = answer
                ids.append(f"m{len(self.sent)}")
            return ids

        def pull_messages(self, ids):
            return [self.replies.pop(i) for i in list(ids)]

    def model(value: float) -> ArrayRecord:
        return ArrayRecord({"w": Array(np.full((2,), value, dtype=np.float32))})

    grid, fed = CountingGrid(), federation(2)

    def ask(arrays: ArrayRecord, clients=(0, 1), config=None, memo=True):
        replies = query_clients(cast(Grid, grid), fed, list(clients), LOCAL_LOSS,
                                LocalLossReply, arrays, config, memo=memo)
        return {p: r.loss_sum for p, r in replies.items()}

    assert ask(model(1.0)) == {0: 2.0, 1: 2.0} and len(grid.sent) == 2
    assert ask(model(1.0)) == {0: 2.0, 1: 2.0} and len(grid.sent) == 2  # kept
    assert ask(model(3.0)) == {0: 6.0, 1: 6.0} and len(grid.sent) == 4  # another model
    ask(model(1.0), clients=(1,))
    ask(model(1.0), config={0: {"x": 1}})
    ask(model(1.0), memo=False)
    assert len(grid.sent) == 2 + 2 + 1 + 2 + 2
    assert ask(model(1.0), config={0: {"x": 1}}) == {0: 2.0, 1: 2.0}
    assert len(grid.sent) == 9


def test_central_test_outputs_are_computed_once_per_model(monkeypatch, data_dir) -> None:
    """The server scores a model on the real test sets once: test accuracy and the MIA's
    non-members read the same outputs; another model is scored again, and the accuracy
    agrees with ``evaluate_model`` on the same images."""
    from fedunl_flwr import phases
    from fedunl_flwr.metrics.evaluation import evaluate_model

    config = RunConfig.from_mapping({"scenario": "mnist-iid", "data-dir": str(data_dir)})
    calls = []
    real = phases.per_sample_outputs

    def counting(model, x, y):
        calls.append(len(y))
        return real(model, x[:500], y[:500])  # the first 500 images keep the test quick

    monkeypatch.setattr(phases, "per_sample_outputs", counting)
    monkeypatch.setattr(phases, "_CENTRAL_OUTPUTS", OrderedDict())  # this process's others
    first, second = (phases.model_for(config, 10, init_index=i) for i in (0, 1))
    records = [model_to_record(m) for m in (first, second)]
    accuracies = phases.central_test_accuracies(config, 10, [records[0], records[0]])
    assert accuracies is not None and len(calls) == 1
    outputs = phases.central_test_outputs(config, 10, records[0])
    assert outputs is not None and len(calls) == 1  # kept for the MIA's non-members
    phases.central_test_accuracies(config, 10, records)
    assert len(calls) == 2
    x, y = phases.central_test_tensors(config)[0]  # type: ignore[index]
    expected = evaluate_model(first, x[:500], y[:500], 10).accuracy
    assert accuracies[0] == accuracies[1] == pytest.approx(expected)


def test_reply_timeout_caps_every_wait_for_replies() -> None:
    """run-config ``reply-timeout``: each ``send_and_receive`` waits at most that long,
    also when a Flower strategy asks for its 3600 s; 0 leaves the caller's wait."""
    from fedunl_flwr.federation import RunGrid

    class RecordingGrid(Grid):
        def __init__(self) -> None:
            self.timeouts: list[float | None] = []

        def send_and_receive(self, messages, *, timeout=None):
            self.timeouts.append(timeout)
            return []

        set_run = run = create_message = get_node_ids = None  # type: ignore[assignment]
        push_messages = pull_messages = None  # type: ignore[assignment]

    inner = RecordingGrid()
    RunGrid(inner, 0).send_and_receive([], timeout=3600)
    grid = RunGrid(inner, 30.0)
    grid.send_and_receive([])
    grid.send_and_receive([], timeout=3600)
    grid.send_and_receive([], timeout=5)
    assert inner.timeouts == [3600, 30.0, 30.0, 5]
    with pytest.raises(ConfigError, match="reply-timeout must be >= 0"):
        RunConfig.from_mapping({"reply-timeout": -1})


def test_the_final_model_is_not_evaluated_twice(monkeypatch, tmp_path, data_dir) -> None:
    """The training's last round has every client evaluate the final model; the phase's
    evaluation of that model reuses those replies instead of asking again."""
    from experiments.simulate import simulate
    from fedunl_flwr.inprocess import InProcessGrid

    sent: list[str] = []
    push = InProcessGrid.push_messages

    def counting(self, messages):
        messages = list(messages)
        sent.extend(m.metadata.message_type for m in messages)
        return push(self, messages)

    monkeypatch.setattr(InProcessGrid, "push_messages", counting)
    simulate({"scenario": "mnist-iid", "num-clients": 2, "samples-per-client": 60,
              "test-samples-per-client": 20, "num-server-rounds": 2, "model-width": 4,
              "results-dir": str(tmp_path), "data-dir": str(data_dir)}, engine="inprocess")
    assert sent.count("train") == 4
    assert sent.count("evaluate") == 4  # rounds 1 and 2; not a third time for the phase


class BlockingRecorder:
    """A training record that waits for ``release`` and notes what it saw."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.seen: list[tuple[int, str, bool]] = []
        self.fail = fail

    def record(self, server_round, global_arrays, client_arrays, weights) -> None:
        assert self.release.wait(timeout=30)
        if self.fail:
            raise OSError("disk full")
        self.seen.append((server_round, threading.current_thread().name,
                          any(a.flags.writeable for m in client_arrays.values()
                              for a in m.values())))


def test_recorders_run_beside_the_next_round_one_round_at_a_time(monkeypatch) -> None:
    recorder = BlockingRecorder()
    strategy = FedAvgTrain(federation(2), [0, 1], 2, recorders=[recorder])
    strategy._sent = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    strategy.aggregate_train(1, as_messages(reply(0, 1.0, 10), reply(1, 4.0, 30)))
    assert recorder.seen == []  # returned while round 1's record waits
    recorder.release.set()
    strategy.aggregate_train(2, as_messages(reply(0, 2.0, 10), reply(1, 3.0, 30)))
    assert recorder.seen[0] == (1, recorder.seen[0][1], False)  # ended before round 2's
    assert recorder.seen[0][1].startswith("fedunl-records")  # read-only arrays, own thread

    def rounds(self, *args, **kwargs):  # Flower's loop, reduced to one more round
        self.aggregate_train(3, as_messages(reply(0, 2.0, 10), reply(1, 3.0, 30)))
        return "result"

    monkeypatch.setattr(FedAvg, "start", rounds)
    assert strategy.start(NO_GRID, ArrayRecord()) == "result"
    assert [r for r, _, _ in recorder.seen] == [1, 2, 3]  # all written when start returns

    failing = BlockingRecorder(fail=True)
    failing.release.set()
    strategy = FedAvgTrain(federation(2), [0, 1], 2, recorders=[failing])
    strategy._sent = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    with pytest.raises(OSError, match="disk full"):  # from the last round, at start's end
        strategy.start(NO_GRID, ArrayRecord())
