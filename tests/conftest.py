"""Shared fixtures: the offline data folder and the Flower/Ray environment."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
# Flower writes its home folder (~/.flwr: telemetry's source id) on every simulation, even
# with telemetry off: the suite points it at a temporary folder and writes nothing at home.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_HOME", tempfile.mkdtemp(prefix="fedunl-tests-flwr-home-"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline datasets (``$FEDUNL_DATA_DIR``); the suite fails loudly without them."""
    folder = Path(os.environ.get("FEDUNL_DATA_DIR", ""))
    if not os.environ.get("FEDUNL_DATA_DIR") or not (folder / "mnist.npz").is_file():
        pytest.fail("set FEDUNL_DATA_DIR to the folder holding mnist.npz, usps.npz, "
                    f"cifar10.npz and tinyimagenet_subset.npz (got {str(folder)!r})")
    return folder


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the modules for ``pytest -n 2 --dist loadfile`` (scripts/test.sh), longest
    first as far as markers tell: deployment tests (they mostly wait, for heartbeats and
    process starts, and started first they overlap the rest instead of being the run's
    tail), then modules by their number of simulations. Modules stay contiguous, so each
    module's fixtures are set up once, on one worker or in a serial run."""
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    modules = list(dict.fromkeys(module(item) for item in items))
    deployed = {module(item) for item in items if item.get_closest_marker("deployment")}
    simulations = Counter(module(item) for item in items
                          if item.get_closest_marker("simulation"))
    rank = {name: (name not in deployed, -simulations[name], index)
            for index, name in enumerate(modules)}
    items.sort(key=lambda item: rank[module(item)])
