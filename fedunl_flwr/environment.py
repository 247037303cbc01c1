"""Environment variables between fedunl's launchers and the processes they start.

Kept free of heavy imports: ``scripts/flwr_run.py`` reads them after it re-executed
itself without torch (its pre-check's memory freed).
"""

#: Set to 1 by fedunl's simulation launchers (``scripts/flwr_run.py``,
#: ``experiments.simulate``); Ray's virtual clients inherit it. A node is simulated only
#: with it *and* Flower's ``num-partitions`` in its node config: an operator who copies
#: ``num-partitions`` into a real SuperNode's node config (as Flower's deployment examples
#: do) does not switch its protections off by that (``client_app.is_simulated``).
SIMULATION_ENV = "FEDUNL_SIMULATION"

#: A file whose existence means the run was interrupted. The launcher
#: (``scripts/flwr_run.py``) creates the file before it says "interrupted" and stops the
#: processes; a ServerApp still running then never marks a phase complete
#: (``store.check_not_interrupted``).
STOP_FILE_ENV = "FEDUNL_STOP_FILE"

#: CPUs each Ray virtual client holds (``--cpus-per-client``), set by the simulation
#: launchers. With it, a simulated client computes with the cores that the round's other
#: clients leave free (:func:`fedunl_flwr.threads.message_threads`).
CLIENT_CPUS_ENV = "FEDUNL_CLIENT_CPUS"
