"""A Flower ``Grid`` that delivers messages to a ``ClientApp`` in this process.

No Ray, no SuperLink: each message is encoded to Flower's wire format and decoded again
(as a SuperLink would carry it), handed to the ClientApp with that node's ``Context``,
and the reply travels back the same way. Node ids are not partition ids (as on a real
federation), each node keeps its own context state, and a ClientApp that raises answers
with Flower's error reply, as the simulation engine does. Used by the tests and by
``experiments.simulate.simulate(..., engine="inprocess")``; the Ray and ``flwr run``
paths stay for what only they prove (separate processes, scheduling, deployment).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

#: Node ids start here so that code confusing them with partition ids fails.
FIRST_NODE_ID = 7001


def _over_the_wire(message: Message) -> Message:
    """A copy of ``message`` as the receiving side would decode it."""
    return message_from_proto(message_to_proto(message))


class InProcessGrid(Grid):
    """Grid over ``num_nodes`` in-process nodes running ``client_app``.

    Parameters
    ----------
    client_app : ClientApp
        The app every node runs.
    num_nodes : int
        Node ``i`` gets node config ``partition-id=i, num-partitions=num_nodes`` (as
        Flower's simulation sets it) unless ``node_configs`` says otherwise.
    run_config : Mapping
        The run config each node's context carries.
    node_configs : list of Mapping, optional
        One node config per node (e.g. a real SuperNode's, without ``num-partitions``).
    """

    def __init__(self, client_app: ClientApp, num_nodes: int,
                 run_config: Mapping[str, Any] | None = None,
                 node_configs: list[Mapping[str, Any]] | None = None, run_id: int = 1) -> None:
        configs = node_configs or [{"partition-id": i, "num-partitions": num_nodes}
                                   for i in range(num_nodes)]
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        self.contexts = {
            FIRST_NODE_ID + i: Context(run_id=run_id, node_id=FIRST_NODE_ID + i,
                                       node_config=dict(config), state=RecordDict(),
                                       run_config=dict(run_config or {}))
            for i, config in enumerate(configs)}
        self._replies: dict[str, Message] = {}
        self.messages_delivered = 0

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def _deliver(self, message: Message) -> Message:
        context = self.contexts.get(message.metadata.dst_node_id)
        if context is None:
            return Message(Error(code=ErrorCode.UNKNOWN,
                                 reason=f"no node {message.metadata.dst_node_id}"),
                           reply_to=message)
        try:
            reply = self.client_app(message=_over_the_wire(message), context=context)
        except Exception as error:  # any error is reported as Flower's error reply
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                 reason=f"{type(error)}:<'{error}'>"), reply_to=message)
        return _over_the_wire(reply)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid4().hex
            self._replies[message.metadata.message_id] = self._deliver(message)
            self.messages_delivered += 1
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


@contextmanager
def acting_as_server(grid: InProcessGrid) -> Iterator[None]:
    """Set the server's identity as Flower's runtime sets it (messages take their run id
    from it) for ``grid``'s run, and restore it afterwards."""
    saved = TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id
    TaskIdentity.task_id, TaskIdentity.run_id = 1, grid.run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def run_in_process(server_app: ServerApp, client_app: ClientApp, num_nodes: int,
                   run_config: Mapping[str, Any] | None = None,
                   node_configs: list[Mapping[str, Any]] | None = None) -> InProcessGrid:
    """Run ``server_app`` to its end over an :class:`InProcessGrid`; exceptions propagate."""
    grid = InProcessGrid(client_app, num_nodes, run_config, node_configs)
    context = Context(run_id=grid.run.run_id, node_id=SUPERLINK_NODE_ID, node_config={},
                      state=RecordDict(), run_config=dict(run_config or {}))
    with acting_as_server(grid):
        server_app(grid, context)
    return grid
