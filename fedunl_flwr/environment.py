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

#: Ray's setting (an environment variable its processes read at start): task arguments
#: and results up to this many bytes travel inside Ray's task messages instead of through
#: its shared-memory object store. Ray's default is 100 KiB, below a client message
#: (the model: 0.6 MB for the 1,000-client CNN), and a Ray actor call through the object
#: store cost 6.6 ms against 3.0 ms inline (``scripts/bench_message_cost.py``, docs/results.md).
#: The simulation launchers set it unless it is set already; larger messages (e.g. a
#: ResNet-18 of full width) still go through the object store.
RAY_INLINE_ENV = "RAY_max_direct_call_object_size"
RAY_INLINE_BYTES = 4 * 2**20
