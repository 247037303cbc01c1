"""The message index patched into Flower 1.41's in-memory link state answers every poll
as Flower's own scan does."""

from __future__ import annotations

import queue
import threading
import time
from types import SimpleNamespace

from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from fedunl_flwr import flower_patches
from fedunl_flwr.flower_patches import indexed_get_message_ins, install_flower_patches


class FakeState:
    """What ``get_message_ins`` reads of a link state: its lock, its store of messages
    and the check that deletes expired ones (here: those named in ``expired``)."""

    def __init__(self, messages: list[tuple[str, int, int]], expired: set[str]) -> None:
        self.lock = threading.RLock()
        self.message_ins_store = {
            message_id: SimpleNamespace(metadata=SimpleNamespace(
                message_id=message_id, dst_node_id=node, run_id=run, delivered_at=""))
            for message_id, node, run in messages}
        self.expired = expired

    def _check_stored_messages(self, message_ids: set[str], run_id: int | None = None
                               ) -> None:
        for message_id in message_ids & self.expired:
            self.message_ins_store.pop(message_id, None)


def _polls(get, state: FakeState) -> list[list[str]]:
    """Every answer to a sequence of polls: node by node, with and without a run filter
    and a limit, as the engine (limit 1) and the Fleet API ask."""
    asked = [(2, 1, None), (1, 1, None), (2, 1, None), (3, None, 8), (2, None, None),
             (1, 2, 7), (3, 1, None), (9, 1, None), (1, 1, None)]
    return [[m.metadata.message_id for m in get(state, node, limit, run_id=run)]
            for node, limit, run in asked]


def test_indexed_polls_return_what_flowers_scan_returns() -> None:
    messages = [("a", 1, 7), ("b", 2, 7), ("c", 2, 7), ("d", 3, 7), ("e", 1, 8), ("f", 3, 8),
                ("g", 2, 8), ("h", 1, 7), ("i", 3, 7)]
    original = flower_patches.ORIGINALS.get("get_message_ins",
                                            InMemoryLinkState.get_message_ins)
    theirs, ours = FakeState(messages, {"c", "i"}), FakeState(messages, {"c", "i"})
    expected = _polls(original, theirs)
    assert _polls(lambda s, n, limit, run_id: indexed_get_message_ins(
        s, n, limit, run_id=run_id, stamp=lambda: "now"), ours) == expected
    assert expected[0] == ["b"] and ["c"] not in expected  # the expired one never comes
    delivered = {k for k, m in ours.message_ins_store.items() if m.metadata.delivered_at}
    assert delivered == {k for k, m in theirs.message_ins_store.items()
                         if m.metadata.delivered_at}
    assert set(ours.message_ins_store) == set(theirs.message_ins_store)


def test_the_patch_is_installed_on_the_pinned_flower_only(monkeypatch) -> None:
    assert install_flower_patches()  # the pinned 1.41.0
    assert InMemoryLinkState.get_message_ins is not flower_patches.ORIGINALS["get_message_ins"]
    assert InMemoryGrid.pull_messages is not flower_patches.ORIGINALS["pull_messages"]
    assert vce_api.add_messages_to_queue is flower_patches.add_messages_to_queue
    monkeypatch.setattr(flower_patches.flwr, "__version__", "1.42.0")
    assert not install_flower_patches()  # another release: left as it is, with a warning
    monkeypatch.undo()
    monkeypatch.setenv(flower_patches.PATCHES_ENV, "0")
    assert not install_flower_patches()


class FakeGrid:
    """An ``InMemoryGrid`` as the pull patch sees it: its state (lock, replied index) and
    Flower's pull, which answers every id whose reply is stored and records what it
    was asked."""

    def __init__(self, stored: set[str]) -> None:
        self.state = SimpleNamespace(lock=threading.RLock())
        self.stored = stored
        self.asked: list[set[str]] = []
        self.pull_interval = 0.1

    @staticmethod
    def pull(grid: FakeGrid, ids: set[str]) -> list[SimpleNamespace]:
        grid.asked.append(set(ids))
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i))
                for i in sorted(ids & grid.stored)]


def test_large_polls_ask_only_for_stored_replies_between_full_polls(monkeypatch) -> None:
    monkeypatch.setattr(flower_patches, "FULL_POLL_MAX", 1)
    grid, now = FakeGrid(stored={"a"}), [0.0]

    def poll(ids: set[str]) -> list[str]:
        return [r.metadata.reply_to_message_id for r in flower_patches.pull_replied_messages(
            grid, ids, FakeGrid.pull, clock=lambda: now[0])]

    replied = flower_patches.replied_index(grid.state)
    awaited = {"a", "b", "c"}
    assert poll(awaited) == ["a"] and grid.asked[-1] == awaited  # the first poll is full
    assert grid.pull_interval == flower_patches.PULL_INTERVAL < 0.1  # Flower's: 0.1
    awaited -= {"a"}
    grid.stored |= {"b", "c"}
    replied.add("b")  # stored by the engine (store_message_res), "c" not recorded
    now[0] = 0.5
    assert poll(awaited) == ["b"] and grid.asked[-1] == {"b"}  # only what has a reply
    assert replied == set()  # pulled replies leave the index
    awaited -= {"b"}
    awaited |= {"d", "e"}
    now[0] = 0.9
    assert poll(awaited) == [] and grid.asked[-1] == {"b"}  # nothing ready: no pull
    now[0] = 1.0  # a second after the last full poll: "c" comes, as Flower would give it
    assert poll(awaited) == ["c"] and grid.asked[-1] == {"c", "d", "e"}
    monkeypatch.setattr(flower_patches, "FULL_POLL_MAX", 1000)
    assert poll({"d", "e"}) == [] and grid.asked[-1] == {"d", "e"}  # small: always full


def test_the_extractor_wakes_on_a_stored_message_and_asks_only_waiting_nodes(
        monkeypatch) -> None:
    # Waits of a minute: a message that arrives within the test's 10 s came by the event.
    monkeypatch.setattr(flower_patches, "EXTRACTOR_WAIT", 60.0)
    state = FakeState([("a", 1, 7), ("b", 2, 7), ("c", 1, 7), ("x", 9, 7)], set())
    asked: list[int] = []

    def get_message_ins(node_id: int, limit: int) -> list:
        asked.append(node_id)
        return indexed_get_message_ins(state, node_id, limit, stamp=lambda: "now")

    state.get_message_ins = get_message_ins  # type: ignore[attr-defined]
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    extractor = threading.Thread(target=flower_patches.add_messages_to_queue,
                                 args=(state, out, {1: 0, 2: 1, 3: 2}, stop))
    extractor.start()
    try:
        # one message per node per pass, as Flower's; node 9 is not this engine's
        assert [out.get(timeout=10).metadata.message_id for _ in range(2)] == ["a", "b"]
        assert sorted(asked) == [1, 2]  # node 3 has nothing waiting: never asked
    finally:
        stop.set()
        extractor.join(timeout=10)
    assert not extractor.is_alive() and out.empty()
    assert state.message_ins_store["c"].metadata.delivered_at == ""

    state = FakeState([], set())
    state.get_message_ins = get_message_ins  # type: ignore[attr-defined]
    stop = threading.Event()
    extractor = threading.Thread(target=flower_patches.add_messages_to_queue,
                                 args=(state, out, {1: 0, 2: 1}, stop))
    extractor.start()
    try:
        time.sleep(0.2)  # asleep on the event (nothing waiting)
        message = SimpleNamespace(metadata=SimpleNamespace(
            message_id="d", dst_node_id=2, run_id=7, delivered_at=""))
        with state.lock:  # what the patched store_message_ins does
            state.message_ins_store["d"] = message
            flower_patches.pending_index(state).setdefault(2, {})["d"] = None
        flower_patches.stored_event(state).set()
        assert out.get(timeout=10) is message
    finally:
        stop.set()
        flower_patches.stored_event(state).set()
        extractor.join(timeout=10)
    assert not extractor.is_alive()
