"""Version-guarded patches of the pinned Flower (1.41.0) for simulations of many clients.

Flower 1.41's simulation engine polls every simulated node every 0.1 s for its next
message (``flwr/server/superlink/fleet/vce/vce_api.py``, ``add_messages_to_queue``), and
``InMemoryLinkState.get_message_ins`` answers each poll by scanning every stored message
(and re-validating each one): with N nodes and M messages in flight, N x M work every
0.1 s. With 10,000 clients the simulation process sat at 100% CPU while the Ray actors
idled (issue 25). The patch keeps an index of undelivered messages by destination node,
filled where messages are stored, so a poll looks only at its own node's messages and
the poll of an idle node costs a dictionary lookup. Messages, order, limits, expiry
checks and the delivered-at stamp are as in Flower's method.

The ServerApp's side had the same shape: ``InMemoryGrid.send_and_receive`` asks for the
replies to every awaited message every 0.1 s, and ``get_message_res`` checks each awaited
message (expiry, its node still online) under the state's lock, which the engine's
threads need to hand messages out and store replies: with 50,000 awaited messages the
ServerApp's polls held the lock most of the time. The second patch keeps an index of
the messages that have a reply waiting (filled where replies are stored) and, while
more than ``FULL_POLL_MAX`` messages are awaited, asks only for those; a full poll, the
one that also turns expired messages and lost nodes into error replies, still runs, at
least every second and at most ``FULL_POLL_SHARE`` of the time. Replies are Flower's
own; an error reply can come up to that interval later than in Flower. The grid polls
every ``PULL_INTERVAL`` seconds instead of Flower's 0.1.

The engine's extractor (``add_messages_to_queue``) itself woke every 0.1 s and asked
every node: a round's messages waited 50 ms on average before any client started (4%
of a 10-client round). The third patch wakes it when a message is stored (an event set
by ``store_message_ins``; it still wakes every 0.1 s to see the stop flag) and asks
only the nodes the index holds messages for, one message per node per pass as
Flower's does.

The patches are to be proposed upstream and are installed only on the version they
were written against (``FLOWER_VERSION``).

``FEDUNL_FLOWER_PATCHES=0`` leaves Flower as it is (for the benchmark's comparison).
"""

from __future__ import annotations

import os
import threading
import time
from logging import WARNING
from typing import Any

import flwr
from flwr.supercore import log

#: The Flower release whose ``InMemoryLinkState`` the patch reproduces.
FLOWER_VERSION = "1.41.0"

#: Environment switch: "0" disables the patch.
PATCHES_ENV = "FEDUNL_FLOWER_PATCHES"

_INDEX = "_fedunl_pending"
_REPLIED = "_fedunl_replied"
_NEXT_FULL_POLL = "_fedunl_next_full_poll"
_STORED = "_fedunl_stored"

#: Seconds the patched extractor sleeps at most between passes (Flower's: 0.1 always).
EXTRACTOR_WAIT = 0.1

#: Up to this many awaited messages a poll asks for all of them, as Flower's does.
FULL_POLL_MAX = 100

#: Seconds between the ServerApp's polls for replies (Flower's default: 0.1): a round
#: waits on average half of it for its last reply (10 clients: 1.30 -> 1.24 s a round,
#: three runs each, docs/results.md).
PULL_INTERVAL = 0.01

#: The share of the time full polls may take (between them, only replies are fetched).
FULL_POLL_SHARE = 0.05

#: Flower's own methods, kept when the patch replaces them (the test compares with them).
ORIGINALS: dict[str, Any] = {}


def pending_index(state: Any) -> dict[int, dict[str, None]]:
    """``state``'s undelivered message ids by destination node (in storage order),
    built from its store on first use."""
    index = state.__dict__.get(_INDEX)
    if index is None:
        with state.lock:
            index = state.__dict__.get(_INDEX)
            if index is None:
                index = {}
                for message_id, message in state.message_ins_store.items():
                    if message.metadata.delivered_at == "":
                        index.setdefault(message.metadata.dst_node_id, {})[message_id] = None
                setattr(state, _INDEX, index)
    return index


def indexed_get_message_ins(state: Any, node_id: int, limit: int | None, *,
                            run_id: int | None = None, stamp: Any = None) -> list[Any]:
    """``InMemoryLinkState.get_message_ins`` through the index: the first ``limit``
    undelivered messages for ``node_id`` (of ``run_id``), marked delivered."""
    if limit is not None and limit < 1:
        raise AssertionError("`limit` must be >= 1")
    index = pending_index(state)
    if not index.get(node_id):  # an idle node's poll: no lock, no scan
        return []
    found = []
    with state.lock:
        queue = index.get(node_id, {})
        for message_id in list(queue):
            state._check_stored_messages({message_id})  # expired or orphaned: deleted
            message = state.message_ins_store.get(message_id)
            if message is None or message.metadata.delivered_at != "":
                del queue[message_id]
                continue
            if run_id is not None and message.metadata.run_id != run_id:
                continue
            found.append(message)
            del queue[message_id]
            if limit and len(found) == limit:
                break
        if not queue:
            index.pop(node_id, None)
    delivered_at = (stamp or _now)()
    for message in found:
        message.metadata.delivered_at = delivered_at
    return found


def stored_event(state: Any) -> threading.Event:
    """Set whenever ``state`` stores a message for a node (the extractor's wake-up)."""
    event = state.__dict__.get(_STORED)
    if event is None:
        event = state.__dict__.setdefault(_STORED, threading.Event())
    return event


def add_messages_to_queue(state: Any, queue: Any, nodes_mapping: Any,
                          f_stop: threading.Event) -> None:
    """Flower's ``vce_api.add_messages_to_queue``, woken by :func:`stored_event` and
    asking only the nodes with a message waiting (:func:`pending_index`)."""
    stored = stored_event(state)
    while not f_stop.is_set():
        stored.clear()  # before the pass: a message stored during it wakes the next one
        for node_id in list(pending_index(state)):
            if node_id in nodes_mapping:
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
        if not pending_index(state):
            stored.wait(EXTRACTOR_WAIT)
        else:  # a node's second message, or one not (yet) for this engine: Flower's pace
            f_stop.wait(EXTRACTOR_WAIT)


def replied_index(state: Any) -> set[str]:
    """Ids of ``state``'s messages whose reply is stored and not yet pulled."""
    replied = state.__dict__.get(_REPLIED)
    if replied is None:
        replied = state.__dict__.setdefault(_REPLIED, set())
    return replied


def pull_replied_messages(grid: Any, message_ids: Any, pull: Any, *,
                          clock: Any = time.monotonic) -> list[Any]:
    """``grid.pull_messages(message_ids)`` through :func:`replied_index`: with more than
    ``FULL_POLL_MAX`` ids, only those with a reply waiting, except for a full poll (all
    ids, through ``pull``, Flower's method) once its interval has passed."""
    # The grid exists before the ServerApp installs the patches (flwr run): its poll
    # interval is shortened here, before send_and_receive's next sleep.
    grid.pull_interval = min(getattr(grid, "pull_interval", PULL_INTERVAL), PULL_INTERVAL)
    # Flower's send_and_receive passes its set of awaited ids: not copied (50,000 ids).
    awaited = message_ids if isinstance(message_ids, set | frozenset) else set(message_ids)
    state = grid.state
    replied = replied_index(state)
    start = clock()
    if len(awaited) <= FULL_POLL_MAX or start >= grid.__dict__.get(_NEXT_FULL_POLL, 0.0):
        replies = list(pull(grid, awaited))
        grid.__dict__[_NEXT_FULL_POLL] = clock() + max(1.0, (clock() - start)
                                                       / FULL_POLL_SHARE)
    else:
        with state.lock:
            ready = awaited & replied
        replies = list(pull(grid, ready)) if ready else []
    with state.lock:
        replied.difference_update(reply.metadata.reply_to_message_id for reply in replies)
    return replies


def _now() -> str:
    from flwr.supercore.date import now

    return now().isoformat()


def install_flower_patches() -> bool:
    """Patch ``InMemoryLinkState``, ``InMemoryGrid`` and the engine's extractor (once);
    False, with a warning, on another Flower version or when ``FEDUNL_FLOWER_PATCHES=0``.
    The extractor is patched for engines started after this call: ``experiments.simulate``
    builds the ServerApp first; under ``flwr run`` the ServerApp's module loads while
    Ray starts, and was seen to come first (an engine started before keeps Flower's
    extractor: the same messages, polled every 0.1 s)."""
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    if os.environ.get(PATCHES_ENV, "1") == "0":
        return False
    if flwr.__version__ != FLOWER_VERSION:
        log(WARNING, "fedunl: Flower %s is not %s: its simulation engine is left unpatched "
            "(polling every message for every node)", flwr.__version__, FLOWER_VERSION)
        return False
    if getattr(InMemoryLinkState, "_fedunl_indexed", False):
        return True
    store = InMemoryLinkState.store_message_ins
    store_reply = InMemoryLinkState.store_message_res
    pull = InMemoryGrid.pull_messages
    ORIGINALS.update(store_message_ins=store, store_message_res=store_reply,
                     get_message_ins=InMemoryLinkState.get_message_ins, pull_messages=pull,
                     add_messages_to_queue=vce_api.add_messages_to_queue)

    def store_message_ins(self: Any, message: Any) -> str | None:
        message_id = store(self, message)
        if message_id is not None:
            with self.lock:
                pending_index(self).setdefault(message.metadata.dst_node_id, {})[
                    message_id] = None
            stored_event(self).set()
        return message_id

    def get_message_ins(self: Any, node_id: int, limit: int | None, *,
                        run_id: int | None = None) -> list[Any]:
        return indexed_get_message_ins(self, node_id, limit, run_id=run_id)

    def store_message_res(self: Any, message: Any) -> str | None:
        message_id = store_reply(self, message)
        if message_id is not None:
            with self.lock:
                replied_index(self).add(message.metadata.reply_to_message_id)
        return message_id

    def pull_messages(self: Any, message_ids: Any) -> list[Any]:
        return pull_replied_messages(self, message_ids, pull)

    InMemoryLinkState.store_message_ins = store_message_ins  # type: ignore[method-assign]
    InMemoryLinkState.store_message_res = store_message_res  # type: ignore[method-assign]
    InMemoryGrid.pull_messages = pull_messages  # type: ignore[method-assign]
    InMemoryLinkState.get_message_ins = get_message_ins  # type: ignore[method-assign]
    vce_api.add_messages_to_queue = add_messages_to_queue
    InMemoryLinkState._fedunl_indexed = True  # type: ignore[attr-defined]
    return True
