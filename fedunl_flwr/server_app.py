"""fedunl ServerApp: validates the run, trains (or loads) the original model, unlearns."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log
from flwr.supercore.logger import FLOWER_LOGGER

from fedunl_flwr.client_app import load_run_config
from fedunl_flwr.config import RunConfig
from fedunl_flwr.data.scenarios import get_scenario
from fedunl_flwr.federation import (
    Federation,
    RunGrid,
    discover_federation,
    summarize_error,
)
from fedunl_flwr.flower_patches import install_flower_patches
from fedunl_flwr.models import MODELS
from fedunl_flwr.phases import train_original
from fedunl_flwr.reports.accuracy import accuracy_frame, frame_to_markdown
from fedunl_flwr.store import RunStore
from strategies import get_unlearning_method
from strategies.unlearning import (
    UnlearningMethod,
    UnlearningRequest,
    check_request_shape,
    run_unlearning,
    validate_request,
)


class FlowerEchoFilter(logging.Filter):
    """Drops what Flower's ``Strategy.start`` repeats of fedunl's own progress lines: the
    per-round aggregated metrics and the end-of-run dump of every round's numbers."""

    def __init__(self) -> None:
        super().__init__()
        self._in_dump = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == "Final results:":
            self._in_dump = True
            return False
        if self._in_dump:
            if message == "" or message.startswith("\t"):
                return False
            self._in_dump = False
        return not message.startswith("\t└──> Aggregated MetricRecord")


class ShortTracebackFilter(logging.Filter):
    """Shortens the multi-line errors Flower's simulation engine logs for a failing
    client (Ray's traceback, twice per failure, about 60 lines) to their last line; the
    run's own error (``federation.raise_on_errors``) names the client and the phase.
    ``FEDUNL_FULL_TRACEBACKS=1`` keeps them whole."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and not os.environ.get("FEDUNL_FULL_TRACEBACKS"):
            message = record.getMessage()
            if "\n" in message:
                record.msg = (summarize_error(message) + " (traceback shortened; "
                              "FEDUNL_FULL_TRACEBACKS=1 shows it)")
                record.args = ()
        return True


def quiet_flower_log() -> None:
    """Install :class:`FlowerEchoFilter` and :class:`ShortTracebackFilter` on Flower's
    logger (once per process)."""
    for kind in (FlowerEchoFilter, ShortTracebackFilter):
        if not any(isinstance(f, kind) for f in FLOWER_LOGGER.filters):
            FLOWER_LOGGER.addFilter(kind())


def check_names(config: RunConfig) -> None:
    """Fail before any work on an unknown scenario, model or strategy (each of a
    comma-separated list), or a request that cannot fit the scenario (client ids out of
    range, empty lists)."""
    scenario = get_scenario(config.scenario)
    if config.model and config.model not in MODELS:
        raise ValueError(f"unknown model {config.model!r}; choose one of {sorted(MODELS)}")
    for each in config.per_method():
        get_unlearning_method(each.strategy)
        check_request_shape(each, scenario.num_clients(config.num_clients))


def plan_methods(config: RunConfig, federation: Federation
                 ) -> list[tuple[RunConfig, UnlearningMethod | None, UnlearningRequest | None]]:
    """Each method of ``strategy`` with its request, validated against what the clients
    reported (raises :class:`ConfigError`): every request is checked before the first
    round of training (and by ``scripts/flwr_run.py`` before a simulation starts)."""
    plan = []
    for each in config.per_method():
        method = get_unlearning_method(each.strategy)
        plan.append((each, method,
                     validate_request(method, each, federation) if method else None))
    return plan


def run(grid: Grid, config: RunConfig) -> dict:
    """All phases of one run; returns paths of what was written (``train`` and
    ``unlearn``; ``<method>.train`` and ``<method>.unlearn`` when ``strategy`` lists
    several methods, which run one after the other on one federation)."""
    check_names(config)
    scenario = get_scenario(config.scenario)
    federation = discover_federation(grid, scenario.num_clients(config.num_clients))
    grid = RunGrid(grid, config.reply_timeout)
    plan = plan_methods(config, federation)
    store = RunStore(config.resolved_results_dir())
    outputs: dict[str, str] = {}
    for each, method, request in plan:
        paths = run_method(grid, each, federation, store, method, request)
        prefix = f"{each.strategy}." if len(plan) > 1 else ""
        outputs.update({prefix + k: str(v) for k, v in paths.items()})
    return outputs


def run_method(grid: Grid, config: RunConfig, federation: Federation, store: RunStore,
               method: UnlearningMethod | None,
               request: UnlearningRequest | None) -> dict[str, Path]:
    """Train (or load) the original that ``method`` needs and unlearn ``request``."""
    records = method.training_records(config) if method is not None else ()
    original = train_original(grid, config, federation, store, records)
    table = accuracy_frame(original.evaluations, federation.class_names)
    log(INFO, "fedunl: original model, per-client per-class test accuracy (%%):\n%s",
        frame_to_markdown(table, digits=1))
    outputs = {"train": original.store.path}
    if method is not None and request is not None:
        outputs["unlearn"] = run_unlearning(method, grid, config, federation, request,
                                            original, store)
    index = store.write_index(config.run_key(), outputs)
    log(INFO, "fedunl: results in %s (listed in %s)",
        ", ".join(map(str, outputs.values())), index)
    return outputs


def build_server_app(overrides: Mapping[str, Any] | None = None) -> ServerApp:
    """The ServerApp; ``overrides`` replace run-config values (for ``run_simulation``).

    In a simulation the engine runs in the ServerApp's process: its message store and
    grid get the indexes of :mod:`fedunl_flwr.flower_patches` (elsewhere unused).
    """
    install_flower_patches()
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        """Entry point of ``flwr run``."""
        quiet_flower_log()
        run(grid, load_run_config(context.run_config, overrides))

    return server_app


app = build_server_app()
