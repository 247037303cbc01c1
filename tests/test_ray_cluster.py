"""A simulation on an existing Ray cluster: a head and a worker node started with
``ray start`` on loopback, and ``scripts/flwr_run.py --ray-address`` (issue 25 point 7,
docs/deployment.md "A simulation on a Ray cluster")."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_simulation_digits import flwr_run

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"
pytestmark = pytest.mark.simulation

#: The GCS's record of every actor the cluster ran (alive or dead) by node. Ray's public
#: state API (``ray.util.state``) needs the dashboard, which the nodes here do not start.
ACTORS_BY_NODE = """
import json, sys, ray
from ray._private import state
ray.init(address=sys.argv[1], logging_level="ERROR")
nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
actors = [(info["ActorClassName"], info["Address"]["NodeID"])
          for info in state.actors().values()]
print(json.dumps({"nodes": nodes, "actors": actors}))
"""


@contextlib.contextmanager
def ray_node(arguments: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    """``ray start --block ARGUMENTS`` in a session of its own, stopped (the whole
    session: raylet, GCS, workers) on exit; ``ray stop`` would stop every Ray on the
    machine."""
    with open(log, "w") as out:
        node = subprocess.Popen([str(RAY), "start", "--block", "--disable-usage-stats",
                                 *arguments], env=env, start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(timeout=15)


def wait_for_nodes(address: str, count: int, env: dict[str, str]) -> dict:
    for _ in range(60):
        found = subprocess.run([sys.executable, "-c", ACTORS_BY_NODE, address], env=env,
                               capture_output=True, text=True, timeout=120)
        if found.returncode == 0:
            listing = json.loads(found.stdout.strip().splitlines()[-1])
            if len(listing["nodes"]) >= count:
                return listing
    raise AssertionError(f"the cluster never had {count} nodes: {found.stderr[-2000:]}")


def test_a_simulation_runs_its_clients_on_both_nodes_of_a_ray_cluster(tmp_path, data_dir):
    # Unix socket paths stay short: pytest's tmp_path can pass their 107-byte limit.
    ray_dir = Path(tempfile.mkdtemp(prefix="fr", dir="/tmp"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    address = f"127.0.0.1:{port}"
    # Ray starts the actors with the node's environment: the virtual clients' data and
    # the simulation flag come from the `ray start` command (docs/deployment.md).
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(FEDUNL_SIMULATION="1", FEDUNL_DATA_DIR=str(data_dir))
    head = ["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
            "--include-dashboard=false", f"--temp-dir={ray_dir}"]
    worker = [f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1"]
    try:
        with ray_node(head, env, tmp_path / "head.log"), \
                ray_node(worker, env, tmp_path / "worker.log"):
            nodes = wait_for_nodes(address, 2, env)["nodes"]
            result = flwr_run(tmp_path, "samples-per-client=60 test-samples-per-client=30 "
                              "num-server-rounds=1", ray_address=address)
            assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
            listing = wait_for_nodes(address, 2, env)
    finally:
        subprocess.run(["rm", "-rf", str(ray_dir)], check=False)
    served = {node for name, node in listing["actors"] if name == "ClientAppActor"}
    # One CPU a node and one a virtual client: one actor on each node, both served.
    assert served == set(nodes), (listing, nodes)
    assert "clients connected" in result.stdout
