"""The registry of query handlers that methods add to the client, by action name.

A method whose clients do work of their own (Halimi et al.'s projected gradient ascent,
...) registers one function here from its client module::

    @query_handler("projected_ascent")
    def projected_ascent(client, weights, config) -> QueryReply: ...

``FedunlClient`` answers ``query.<action>`` with it (``client`` is the ``FedunlClient``:
its model, data, run-config). Importing ``clients`` imports every module in it, so the
module registers itself by being there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fedunl_flwr.protocol import Reply

#: What a query action returns: one of the typed replies of ``fedunl_flwr.protocol``.
QueryReply = Reply
QueryHandler = Callable[[Any, "list[np.ndarray] | None", dict], QueryReply]

QUERY_HANDLERS: dict[str, QueryHandler] = {}


def query_handler(action: str) -> Callable[[QueryHandler], QueryHandler]:
    """Register ``function`` as the answer to ``query.<action>`` (once per action)."""
    def register(function: QueryHandler) -> QueryHandler:
        known = QUERY_HANDLERS.get(action)
        if known is not None and known.__qualname__ != function.__qualname__:
            raise ValueError(f"query action {action!r} has two handlers: "
                             f"{known.__qualname__} and {function.__qualname__}")
        QUERY_HANDLERS[action] = function
        return function

    return register
