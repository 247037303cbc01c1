"""Discover the connected clients and address them by partition id."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from logging import INFO
from typing import Any, TypeVar

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log
from flwr.supercore.run import Run

from fedunl_flwr import protocol
from fedunl_flwr.metrics.evaluation import Evaluation
from fedunl_flwr.protocol import DescribeReply, EvaluateReply, ReplyRecord

R = TypeVar("R", bound=ReplyRecord)


class RunGrid(Grid):
    """The run's ``grid`` as the server uses it.

    - Each ``send_and_receive`` waits at most ``reply_timeout`` seconds (run-config
      ``reply-timeout``; 0: as long as the caller asks), whatever its caller asks
      (Flower's strategies ask 3600 s): a node that does not answer in time is then
      named by :func:`raise_on_errors`.
    - Each message's config says how many messages were sent with it
      (``protocol.ROUND_MESSAGES``): a simulated client computes with the cores the
      others leave free (:mod:`fedunl_flwr.threads`).

    Parameters
    ----------
    grid : Grid
        The grid of the run (``InMemoryGrid``, ``GrpcGrid`` or the tests' in-process one).
    reply_timeout : float
        Seconds, >= 0.
    """

    def __init__(self, grid: Grid, reply_timeout: float) -> None:
        self.grid = grid
        self.timeout = reply_timeout

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(with_round_size(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        limit = timeout
        if self.timeout > 0:
            limit = self.timeout if timeout is None else min(timeout, self.timeout)
        return self.grid.send_and_receive(with_round_size(messages), timeout=limit)


def with_round_size(messages: Iterable[Message]) -> list[Message]:
    """``messages``, each config telling how many there are (Flower's strategies share one
    config record among a round's messages: the same value for all)."""
    batch = list(messages)
    for message in batch:
        message.content.config_records.setdefault("config", ConfigRecord())[
            protocol.ROUND_MESSAGES] = len(batch)
    return batch


class ClientError(RuntimeError):
    """A client replied with an error; the run stops rather than go on without it."""


@dataclass(frozen=True)
class ClientInfo:
    """What a client reported of itself (sizes and label counts, never data)."""

    partition_id: int
    node_id: int
    num_train: int
    num_test: int
    train_class_counts: tuple[int, ...]
    domain: str = ""
    fingerprint: str = ""  # hash of the client's data arrays (protocol.DATA_FINGERPRINT)


@dataclass(frozen=True)
class Federation:
    """Connected clients keyed by partition id, and the shared number of classes."""

    clients: dict[int, ClientInfo]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def partition_ids(self) -> list[int]:
        return sorted(self.clients)

    def node_ids(self, partition_ids: list[int]) -> list[int]:
        return [self.clients[p].node_id for p in partition_ids]

    @cached_property
    def answers(self) -> dict[tuple, dict[int, Any]]:
        """Replies to evaluation queries, kept for this federation's lifetime (one server
        run): see :func:`query_clients`'s ``memo``."""
        return {}

    @cached_property
    def _partition_by_node(self) -> dict[int, int]:
        # Built once: every round maps each reply through it.
        return {info.node_id: pid for pid, info in self.clients.items()}

    def partition_of(self, reply: Message, claimed: int | None = None) -> int:
        """The partition of the node that sent ``reply`` (not what the reply says of
        itself); a reply whose ``claimed`` partition differs is refused."""
        node = reply.metadata.src_node_id
        by_node = self._partition_by_node
        if node not in by_node:
            raise ClientError(f"a reply came from node {node}, which is not in the federation")
        if claimed is not None and claimed != by_node[node]:
            raise ClientError(f"node {node} (partition {by_node[node]}) replied as "
                              f"partition {claimed}")
        return by_node[node]

    @property
    def fingerprint(self) -> str:
        """:func:`data_fingerprint` of the clients' data fingerprints."""
        return data_fingerprint({p: c.fingerprint for p, c in self.clients.items()})


def data_fingerprint(client_fingerprints: Mapping[int, str]) -> str:
    """One hash of every client's data fingerprint (in partition-id order): phases of the
    run store are keyed by it, so changed data never reuses a stored model."""
    text = ";".join(f"{p}:{client_fingerprints[p]}" for p in sorted(client_fingerprints))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_data(key: Mapping[str, Any], fingerprint: str) -> dict[str, Any]:
    """A phase key plus the data fingerprint (``Federation.fingerprint``) as ``data``."""
    return {**key, "data": fingerprint}


def summarize_error(reason: str | None, limit: int = 300) -> str:
    """The last line of a client's error (Ray wraps it in its whole traceback)."""
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    last = lines[-1] if lines else str(reason)
    return last if len(last) <= limit else last[:limit] + "..."


def format_eta(seconds: float) -> str:
    """``"1 h 02 min"``, ``"3 min 05 s"`` or ``"12 s"``: the time a phase still needs."""
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


#: A query still running after this many seconds logs each reply as it arrives, with an ETA.
PROGRESS_AFTER = 5.0
#: While no reply arrives, a "still waiting" line this often.
WAITING_EVERY = 30.0


def send_and_receive_with_progress(grid: Grid, messages: list[Message],
                                   what: str) -> list[Message]:
    """``grid.send_and_receive`` that shows progress on long client work (and, like it,
    waits at most a :class:`RunGrid`'s reply timeout).

    Attribution, gradient statistics or an ascent can keep every client busy for minutes;
    once the query has run ``PROGRESS_AFTER`` s, each arriving reply logs the count, the
    elapsed time and an ETA (linear in the replies so far).
    """
    pending = set(grid.push_messages(messages))
    replies: list[Message] = []
    total, start = len(pending), time.monotonic()
    last_log = start
    # run-config reply-timeout: stop waiting; the caller names who did not answer.
    limit = grid.timeout if isinstance(grid, RunGrid) and grid.timeout > 0 else None
    while pending and (limit is None or time.monotonic() - start < limit):
        arrived = list(grid.pull_messages(pending))
        now = time.monotonic()
        elapsed = now - start
        if not arrived:
            if now - last_log >= WAITING_EVERY:
                log(INFO, "fedunl %s: %d/%d client(s) replied | %.1f s | waiting", what,
                    len(replies), total, elapsed)
                last_log = now
            time.sleep(0.2)
            continue
        replies.extend(arrived)
        pending.difference_update(m.metadata.reply_to_message_id for m in arrived)
        if elapsed >= PROGRESS_AFTER:
            left = elapsed / len(replies) * (total - len(replies))
            log(INFO, "fedunl %s: %d/%d client(s) replied | %.1f s | ETA %s", what,
                len(replies), total, elapsed, format_eta(left))
            last_log = now
    return replies


def raise_on_errors(replies: list[Message], what: str, expected: list[int] | None = None,
                    federation: Federation | None = None) -> None:
    """Raise :class:`ClientError` unless every expected node replied without error.

    ``expected`` are the node ids the messages went to: a node without a valid reply is
    named by partition id (``federation``) and node id, so the run never goes on with
    fewer clients than it asked (an error the SuperLink makes for a lost node carries
    the SuperLink's id as its source, so the missing node is found by elimination).
    """
    errors = [summarize_error(m.error.reason) for m in replies if m.has_error()]
    valid = {m.metadata.src_node_id for m in replies if not m.has_error()}
    if expected is None:
        missing = [m.metadata.src_node_id for m in replies if m.has_error()]
    else:
        missing = [node for node in expected if node not in valid]
    if not errors and not missing:
        return
    partition = ({c.node_id: c.partition_id for c in federation.clients.values()}
                 if federation else {})
    named = [f"partition {partition[n]} (node {n})" if n in partition else f"node {n}"
             for n in missing]
    counts = f" ({len(valid)} of {len(expected)} replied)" if expected is not None else ""
    reasons = f"; errors: {'; '.join(sorted(set(errors)))}" if errors else ""
    raise ClientError(f"{what} failed{counts}: no valid reply from {', '.join(named)}"
                      f"{reasons}")


#: Seconds to wait for the expected clients: a simulation registers all its virtual
#: nodes at once, real SuperNodes connect late.
SIMULATION_NODE_WAIT = 10.0
DEPLOYMENT_NODE_WAIT = 600.0


def wait_for_nodes(grid: Grid, expected: int, timeout: float | None = None) -> list[int]:
    """Node ids once ``expected`` nodes are connected.

    In a simulation (Flower's in-memory grid) a shortfall is final, so it fails within
    seconds and says how to fix it; a deployment waits up to ``DEPLOYMENT_NODE_WAIT``.
    """
    simulated = type(grid).__name__ == "InMemoryGrid"
    if timeout is None:
        timeout = SIMULATION_NODE_WAIT if simulated else DEPLOYMENT_NODE_WAIT
    deadline = time.monotonic() + timeout
    while True:
        node_ids = list(grid.get_node_ids())
        if len(node_ids) >= expected:
            return node_ids
        if time.monotonic() > deadline:
            fix = (f"pass --federation-config 'num-supernodes={expected}' to flwr run (or "
                   "use scripts/flwr_run.py, which sets it from the scenario)" if simulated
                   else "start the missing SuperNodes (one per partition id)")
            raise TimeoutError(f"expected {expected} clients, {len(node_ids)} connected "
                               f"after {timeout:.0f} s: {fix}")
        time.sleep(1.0)


def discover_federation(grid: Grid, expected_clients: int) -> Federation:
    """Ask every node for its partition id and label counts (one query round)."""
    node_ids = wait_for_nodes(grid, expected_clients)
    messages = [Message(RecordDict(), dst_node_id=n, message_type="query.describe")
                for n in node_ids]
    replies = list(grid.send_and_receive(messages))
    raise_on_errors(replies, "loading client data", node_ids)
    clients: dict[int, ClientInfo] = {}
    class_names: set[tuple[str, ...]] = set()
    for reply in replies:
        described = DescribeReply.from_content(reply.content)
        pid = described.partition_id
        if pid in clients:
            raise ValueError(f"two nodes report partition-id {pid}")
        clients[pid] = ClientInfo(pid, reply.metadata.src_node_id, described.num_train,
                                  described.num_test, described.train_class_counts,
                                  described.domain, described.fingerprint)
        class_names.add(described.class_names)
    if len(class_names) != 1:
        raise ValueError(f"clients disagree on the label space: {sorted(class_names)}")
    if sorted(clients) != list(range(expected_clients)):
        raise ValueError(f"expected partition ids 0..{expected_clients - 1}, "
                         f"got {sorted(clients)}")
    names = list(class_names.pop())
    log(INFO, "fedunl: %d clients connected, %d classes", len(clients), len(names))
    return Federation(clients, names)


def arrays_digest(arrays: ArrayRecord) -> str:
    """SHA-256 of a model's tensor names, shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for name, array in arrays.items():
        digest.update(f"{name}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.data)
    return digest.hexdigest()


def evaluations_in(replies: list[Message], federation: Federation) -> dict[int, Evaluation]:
    """The per-class counts of EVALUATE replies, keyed by the partition of the node that
    sent each."""
    evaluations = {}
    for reply in replies:
        evaluated = EvaluateReply.from_content(reply.content)
        evaluations[federation.partition_of(reply, evaluated.partition_id)] = Evaluation(
            evaluated.loss_sum, np.asarray(evaluated.class_correct, dtype=np.int64),
            np.asarray(evaluated.class_total, dtype=np.int64))
    return evaluations


def evaluation_key(arrays: ArrayRecord, partition_ids: list[int]) -> tuple:
    """Where ``federation.answers`` keeps the clients' evaluation of ``arrays``."""
    return ("evaluate", arrays_digest(arrays), tuple(sorted(partition_ids)))


def query_clients(grid: Grid, federation: Federation, partition_ids: list[int], action: str,
                  reply_type: type[R], arrays: ArrayRecord | None = None,
                  configs: dict[int, dict] | None = None, memo: bool = False) -> dict[int, R]:
    """Send ``query.<action>`` (optional model, per-client config) to each client.

    Returns the typed replies keyed by the partition of the node that sent each; a
    client error raises :class:`ClientError`. With ``memo`` (for queries whose answer is
    a function of the model, the config and the client's fixed data: the evaluation
    queries), an identical query in the same federation is answered from the replies
    kept in ``federation.answers``: the original and the retrained models are scored
    once per run, not once per method of a ``strategy`` list, nor again by each check.
    """
    if not partition_ids:
        return {}
    key = None
    if memo:
        key = (action, reply_type.__name__, arrays_digest(arrays) if arrays is not None
               else None, tuple(partition_ids),
               repr(sorted((p, sorted((configs or {}).get(p, {}).items()))
                           for p in partition_ids)))
        if key in federation.answers:
            return dict(federation.answers[key])
    messages = []
    for pid in partition_ids:
        content = RecordDict({"config": ConfigRecord(dict((configs or {}).get(pid, {})))})
        if arrays is not None:
            content["arrays"] = arrays
        messages.append(Message(content, dst_node_id=federation.clients[pid].node_id,
                                message_type=f"query.{action}"))
    replies = send_and_receive_with_progress(grid, messages, f"query.{action}")
    raise_on_errors(replies, f"query {action!r}", federation.node_ids(partition_ids),
                    federation)
    typed = {}
    for reply in replies:
        decoded = reply_type.from_content(reply.content)
        typed[federation.partition_of(reply, decoded.partition_id)] = decoded
    answer = {pid: typed[pid] for pid in partition_ids}
    if key is not None:
        federation.answers[key] = answer
    return dict(answer)
