"""Run the fedunl app as a Flower simulation in this process and find its results."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedunl_flwr.client_app import (
    build_client_app,
    load_run_config,
    simulation_environment,
)
from fedunl_flwr.data.scenarios import get_scenario
from fedunl_flwr.inprocess import run_in_process
from fedunl_flwr.server_app import build_server_app
from fedunl_flwr.store import RunStore

ENGINES = ("ray", "inprocess")


def simulate(overrides: Mapping[str, Any], num_supernodes: int | None = None,
             cpus_per_client: float | None = None, engine: str = "ray") -> dict[str, Path]:
    """One simulated run of the app with run-config ``overrides``.

    A comma-separated ``strategy`` runs each method in turn (keys ``<method>.train``,
    ``<method>.unlearn``). ``engine="ray"`` is Flower's ``run_simulation`` (Ray virtual clients);
    ``engine="inprocess"`` runs the same ServerApp and ClientApp over
    :class:`fedunl_flwr.inprocess.InProcessGrid` (real Flower messages, no Ray: seconds
    instead of a Ray start). ``cpus_per_client`` is each Ray virtual client's CPU share
    (default 1); in process, where clients run one after another with the process's torch
    threads, it makes each message compute with the threads a Ray client of that share
    would (``fedunl_flwr.threads``), as the reproducibility test needs. Returns the phase
    folders the server listed in the run store's index; raises ``RuntimeError`` if the
    run did not complete (``run_simulation`` itself only logs a failed ServerApp; in
    process, the ServerApp's own exception propagates).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    config = load_run_config({}, overrides)
    count = num_supernodes or get_scenario(config.scenario).num_clients(config.num_clients)
    gpus = 0.0
    if os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1"):
        gpus = 1.0 / min(count, 4)
    store = RunStore(config.resolved_results_dir())
    configs = config.per_method()
    for each in configs:  # only this run's listing counts
        store.index_path(each.run_key()).unlink(missing_ok=True)
    if engine == "inprocess":
        with simulation_environment(client_cpus=cpus_per_client):
            run_in_process(build_server_app(dict(overrides)),
                           build_client_app(dict(overrides)), count)
    else:
        from flwr.simulation import run_simulation

        # Ray's workers take the environment as ray.init (inside, shut down at the end)
        # finds it.
        cpus = 1.0 if cpus_per_client is None else cpus_per_client
        with simulation_environment(client_cpus=cpus):
            run_simulation(build_server_app(dict(overrides)),
                           build_client_app(dict(overrides)), num_supernodes=count,
                           backend_config={"client_resources": {"num_cpus": cpus,
                                                                "num_gpus": gpus},
                                           # A Ray cluster started with `ray start` on
                                           # this machine would be joined otherwise.
                                           "init_args": {"log_to_driver": True,
                                                         "address": "local"}})
    paths: dict[str, Path] = {}
    for each in configs:
        listed = store.read_index(each.run_key())
        missing = [str(p) for p in (listed or {}).values() if not (p / "summary.json").exists()]
        if listed is None or missing:
            raise RuntimeError(f"simulation did not complete: the server listed no complete "
                               f"phases for {each.strategy} ({missing or 'no index'}); see "
                               "the log above")
        prefix = f"{each.strategy}." if len(configs) > 1 else ""
        paths.update({prefix + k: v for k, v in listed.items()})
    return paths
