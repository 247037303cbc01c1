"""Client work of the cross-domain fair unlearning routes (seed 000)."""

from __future__ import annotations

from typing import ClassVar


class FairUnlearningWork:
    """Mixin for ``BaseClient``: activation statistics and attribution scores."""

    QUERY_ACTIONS: ClassVar[tuple[str, ...]] = ()
