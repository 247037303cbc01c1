"""Benchmark: where the milliseconds of one client message go (issue 25 point 2).

One evaluation message (the global model and a config) per client, for ``--clients``
of a federation of many small clients, timed layer by layer in one run:

1. plain: ``evaluate_model`` on the client's test tensors (the plain loop's work);
2. ClientApp: fedunl's ClientApp called in this process on the message (the client's
   data already built; its first message, which builds it, is timed apart);
3. pickle: the message and the node's context pickled and unpickled (what Ray does to
   an actor call's arguments and result);
4. Ray no-op: an actor call carrying the message and context and returning them;
5. Ray + ClientApp: an actor that runs the ClientApp on them (Flower's actor does this).

Each layer's extra cost over the one below it is the breakdown. Sequential calls, one
actor. Ray passes arguments up to ``RAY_max_direct_call_object_size`` bytes inline
(fedunl's launchers: 4 MiB, ``fedunl_flwr.environment.RAY_INLINE_BYTES``; set the
variable to 102400, Ray's default, to time the object store's path). The Flower
engine's own share (its threads, its link state) is what
``scripts/bench_flower_vs_plain.py --evaluate`` measures beyond layer 5.
Usage: ``python scripts/bench_message_cost.py [--clients 200]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

import bench_utils  # noqa: F401  (puts the project on sys.path)
from bench_utils import ROOT

from fedunl_flwr.client_app import build_client_app, load_run_config, simulation_environment
from fedunl_flwr.data.scenarios import federated_data, get_scenario
from fedunl_flwr.data.tensors import images_to_tensor, labels_to_tensor
from fedunl_flwr.environment import RAY_INLINE_BYTES, RAY_INLINE_ENV, SIMULATION_ENV
from fedunl_flwr.inprocess import InProcessGrid, acting_as_server
from fedunl_flwr.metrics.evaluation import evaluate_model
from fedunl_flwr.phases import model_for
from fedunl_flwr.records import to_record


def per_call_ms(function: Callable[..., Any], arguments: list[tuple]) -> float:
    """Median milliseconds of ``function(*a)`` over ``arguments``, each call timed alone."""
    times = []
    for each in arguments:
        start = time.perf_counter()
        function(*each)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def pickled_both_ways(message: Any, context: Any, reply: Any) -> None:
    pickle.loads(pickle.dumps((message, context), protocol=5))
    pickle.loads(pickle.dumps((reply, context), protocol=5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="fashion-mnist-iid")
    parser.add_argument("--num-clients", type=int, default=1000)
    parser.add_argument("--samples-per-client", type=int, default=60)
    parser.add_argument("--test-samples-per-client", type=int, default=100)
    parser.add_argument("--clients", type=int, default=200, help="clients timed")
    args = parser.parse_args()
    overrides = {"scenario": args.scenario, "num-clients": args.num_clients,
                 "samples-per-client": args.samples_per_client,
                 "test-samples-per-client": args.test_samples_per_client}
    config = load_run_config({}, overrides)
    scenario = get_scenario(config.scenario)
    fed = federated_data(config)
    model = model_for(config, fed.num_classes, 0)
    arrays = to_record({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    timed = range(min(args.clients, len(fed.clients)))
    tests = [(images_to_tensor(fed.clients[i].x_test, scenario.in_channels),
              labels_to_tensor(fed.clients[i].y_test)) for i in timed]

    from flwr.app import ConfigRecord, RecordDict
    from flwr.common import MessageType

    client_app = build_client_app(overrides)
    grid = InProcessGrid(client_app, len(fed.clients))
    node_ids = list(grid.get_node_ids())
    with acting_as_server(grid):
        messages = []
        for i in timed:
            message = grid.create_message(
                RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}),
                MessageType.EVALUATE, node_ids[i], "1")
            message.metadata.__dict__["_message_id"] = f"m{i}"
            messages.append(message)
    contexts = [grid.contexts[node_ids[i]] for i in timed]

    calls = list(zip(messages, contexts, strict=True))
    layers: dict[str, float] = {}
    layers["1 plain evaluate_model"] = per_call_ms(
        lambda x, y: evaluate_model(model, x, y, fed.num_classes), tests)
    with simulation_environment():
        layers["ClientApp, first message (builds the client)"] = per_call_ms(client_app, calls)
        layers["2 ClientApp"] = per_call_ms(client_app, calls)
        replies = [client_app(m, c) for m, c in calls]
    layers["3 pickle message+context, reply+context"] = per_call_ms(
        pickled_both_ways, [(m, c, r) for (m, c), r in zip(calls, replies, strict=True)])

    import ray

    os.environ.setdefault(RAY_INLINE_ENV, str(RAY_INLINE_BYTES))  # as the launchers do
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), SIMULATION_ENV: "1",
                                       "FEDUNL_DATA_DIR": os.environ.get(
                                           "FEDUNL_DATA_DIR", "")}})

    @ray.remote(num_cpus=1)  # one each: two CPUs for the two actors
    class Echo:
        def run(self, message, context):
            return message, context

    @ray.remote(num_cpus=1)  # one each: two CPUs for the two actors
    class AppActor:
        def __init__(self) -> None:
            from fedunl_flwr.client_app import build_client_app
            self.app = build_client_app(overrides)

        def run(self, message, context):
            return self.app(message, context), context

    echo, app_actor = Echo.remote(), AppActor.remote()  # type: ignore[attr-defined]
    ray.get(echo.run.remote(*calls[0]))
    layers["4 Ray actor call, no-op"] = per_call_ms(
        lambda m, c: ray.get(echo.run.remote(m, c)), calls)
    ray.get([app_actor.run.remote(m, c) for m, c in calls])  # builds every client
    layers["5 Ray actor call running the ClientApp"] = per_call_ms(
        lambda m, c: ray.get(app_actor.run.remote(m, c)), calls)
    ray.shutdown()

    parameters = sum(a.numpy().size for a in arrays.values())
    print(f"\n{args.scenario}, {args.num_clients} clients x {args.samples_per_client} "
          f"training samples, {len(tests[0][1])} test samples a client, model "
          f"{config.model or scenario.default_model} ({parameters:,} parameters); median "
          f"ms of {len(tests)} sequential messages, one process / one actor, "
          f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}, Ray inline "
          f"limit {int(os.environ[RAY_INLINE_ENV]):,} bytes")
    plain, app = layers["1 plain evaluate_model"], layers["2 ClientApp"]
    ray_call = layers["4 Ray actor call, no-op"]
    both = layers["5 Ray actor call running the ClientApp"]
    for name, value in layers.items():
        print(f"  {name:<48} {value:8.2f} ms  ({value / plain:5.2f}x plain)")
    print(f"  layer 5 = compute (1) {plain:.2f} + ClientApp (2-1) {app - plain:.2f} + Ray "
          f"call (4) {ray_call:.2f} + rest (5-4-2) {both - ray_call - app:.2f} ms")


if __name__ == "__main__":
    main()
