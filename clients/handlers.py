"""The one registry of client query actions: each action's handler and its query policy.

Every ``query.<action>`` a fedunl client answers is registered here, the built-in ones
by the modules of ``clients`` and a method's own by its client module::

    @query_handler("projected_ascent", QueryPolicy(forget_data=True))
    def projected_ascent(client, weights, config) -> AscentReply: ...

``client`` is the ``FedunlClient`` (its model, data, run-config); the handler returns
one of the typed replies of ``fedunl_flwr.protocol``. The policy says what a real
SuperNode checks before answering (``fedunl_flwr.client_app.check_query_allowed``).
Importing ``clients`` imports every module in it, so a module registers its handlers by
being there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedunl_flwr.protocol import Reply

#: What a query action returns: one of the typed replies of ``fedunl_flwr.protocol``.
QueryReply = Reply
QueryHandler = Callable[[Any, "list[np.ndarray] | None", dict], Any]


#: Fewest samples an aggregate answer of a real SuperNode may cover (a mean gradient or
#: loss over "the remaining data", a class's mean activations, a class's attribution): a
#: server that narrowed the set to one sample would read its label.
MIN_AGGREGATE_SAMPLES = 10

#: Config key the ClientApp sets for each query, never taken from the server: the fewest
#: samples per answered class (``MIN_AGGREGATE_SAMPLES`` on a real SuperNode, 0 on a
#: simulated one, whose experimenter owns all data).
NODE_MINIMUM_SAMPLES = "node-minimum-samples"


def check_class_counts(action: str, counts: Mapping[int, int], config: Mapping[str, Any]
                       ) -> None:
    """Refuse an answer over a class that has fewer samples than the node's minimum (a
    class the client does not hold, 0 samples, reveals nothing)."""
    minimum = int(config.get(NODE_MINIMUM_SAMPLES, 0))
    few = {c: n for c, n in counts.items() if 0 < n < minimum}
    if few:
        raise PermissionError(f"query.{action} would answer over class(es) {sorted(few)} with "
                              f"only {[few[c] for c in sorted(few)]} sample(s); this SuperNode "
                              f"answers over at least {minimum} per class so that no single "
                              "sample shows")


def check_sample_count(action: str, count: int, config: Mapping[str, Any]) -> None:
    """Refuse an answer over fewer samples than the node's minimum (0 samples is fine)."""
    minimum = int(config.get(NODE_MINIMUM_SAMPLES, 0))
    if 0 < count < minimum:
        raise PermissionError(f"query.{action} would answer over only {count} sample(s); this "
                              f"SuperNode answers over at least {minimum} so that no single "
                              "sample shows")


@dataclass(frozen=True)
class QueryPolicy:
    """What answering an action can reveal or do, for a real SuperNode's check.

    Parameters
    ----------
    evaluation_only : bool
        The answer is about individual samples (true-label probabilities, losses,
        gradients of the forget data): a real node answers only with node config
        ``allow-evaluation-queries=true``, and only about its own ``forget-request``.
    forget_data : bool
        The action works on the node's forget data (a method's own unlearning, e.g.
        Halimi et al.'s ascent): only for its own ``forget-request``.
    only_when : Callable[[Mapping], bool] | None
        The policy applies only to messages whose config satisfies this (e.g. a mean
        gradient over the forget data rather than the remaining data).
    """

    evaluation_only: bool = False
    forget_data: bool = False
    only_when: Callable[[Mapping[str, Any]], bool] | None = None

    def restricts(self, config: Mapping[str, Any]) -> bool:
        """Whether a real node must check this message against its own request."""
        return (self.evaluation_only or self.forget_data) and (
            self.only_when is None or self.only_when(config))


@dataclass(frozen=True)
class RegisteredQuery:
    """One action's handler and policy."""

    handler: QueryHandler
    policy: QueryPolicy


QUERIES: dict[str, RegisteredQuery] = {}


def query_handler(action: str, policy: QueryPolicy | None = None
                  ) -> Callable[[QueryHandler], QueryHandler]:
    """Register ``function`` as the answer to ``query.<action>`` (once per action)."""
    def register(function: QueryHandler) -> QueryHandler:
        known = QUERIES.get(action)
        if known is not None and known.handler.__qualname__ != function.__qualname__:
            raise ValueError(f"query action {action!r} has two handlers: "
                             f"{known.handler.__qualname__} and {function.__qualname__}")
        QUERIES[action] = RegisteredQuery(function, policy or QueryPolicy())
        return function

    return register


def query_policy(action: str) -> QueryPolicy:
    """The registered policy of ``action`` (``ValueError`` for an unknown action)."""
    if action not in QUERIES:
        raise ValueError(f"unknown query action {action!r}")
    return QUERIES[action].policy
