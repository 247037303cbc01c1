"""Client work of FedMemEraser and its evaluation (seed 001)."""

from __future__ import annotations

from typing import ClassVar


class MemorizationWork:
    """Mixin for ``BaseClient``: mean gradients, per-sample evaluation, CSL."""

    QUERY_ACTIONS: ClassVar[tuple[str, ...]] = ()
