"""A simulated client computes with the cores that the round's other clients leave free."""

from __future__ import annotations

import os

import pytest
import torch

from fedunl_flwr import protocol, threads
from fedunl_flwr.threads import message_threads, threads_for_message


@pytest.mark.parametrize(("cores", "client_cpus", "messages", "expected"), [
    (2, 1, 1, 2),    # the fair protocol's requester alone: both cores
    (2, 1, 2, 1),    # two clients at once: one core each (Ray's own setting)
    (2, 1, 10, 1),
    (16, 1, 3, 5),   # three clients at once share 16 cores
    (16, 2, 10, 2),  # never fewer than the client's own CPUs
    (4, 0.5, 3, 1),  # fractions of a CPU: three of eight slots busy
    (4, 0.5, 1, 4),
    (1, 1, 5, 1),
])
def test_threads_for_message(cores, client_cpus, messages, expected) -> None:
    assert threads_for_message(cores, client_cpus, messages) == expected


def test_threads_for_message_refuses_nonsense() -> None:
    for bad in ((0, 1, 1), (2, 0, 1), (2, 1, 0)):
        with pytest.raises(ValueError, match="need cores >= 1"):
            threads_for_message(*bad)


def test_message_threads_only_on_a_simulated_node_its_launcher_sized(monkeypatch) -> None:
    """Set for the message and restored; a real SuperNode, a launcher that did not say
    its clients' CPUs, or a message without the batch size changes nothing."""
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    before = torch.get_num_threads()
    config = {protocol.ROUND_MESSAGES: 1}

    def inside(config, simulated):
        with message_threads(config, simulated):
            return torch.get_num_threads()

    monkeypatch.delenv("FEDUNL_CLIENT_CPUS", raising=False)
    assert inside(config, simulated=True) == before
    monkeypatch.setenv("FEDUNL_CLIENT_CPUS", "1")
    assert inside(config, simulated=True) == 4
    assert torch.get_num_threads() == before
    assert inside({protocol.ROUND_MESSAGES: 4}, simulated=True) == 1
    assert inside(config, simulated=False) == before
    assert inside({}, simulated=True) == before


def test_simulations_pass_client_messages_inline_in_ray_unless_told_otherwise(
        monkeypatch) -> None:
    """Ray's processes read the setting at start: the launchers' environment carries it
    (a user's own value wins) and it is restored after."""
    from fedunl_flwr.client_app import simulation_environment
    from fedunl_flwr.environment import RAY_INLINE_BYTES, RAY_INLINE_ENV

    monkeypatch.delenv(RAY_INLINE_ENV, raising=False)
    with simulation_environment(client_cpus=1):
        assert os.environ[RAY_INLINE_ENV] == str(RAY_INLINE_BYTES)
    assert RAY_INLINE_ENV not in os.environ
    monkeypatch.setenv(RAY_INLINE_ENV, "102400")
    with simulation_environment():
        assert os.environ[RAY_INLINE_ENV] == "102400"
    assert RAY_INLINE_BYTES > 151_402 * 4 + 4096  # the 1,000-client CNN and its message


@pytest.mark.simulation
def test_a_lone_requester_trains_with_every_core(monkeypatch, tmp_path, data_dir) -> None:
    """A whole run: the original's rounds (nine clients at once) train with one thread
    each, the fair protocol's rounds (the requester alone) with all cores."""
    from clients.fedunl_client import FedunlClient
    from fedunl_flwr.client_app import build_client_app, simulation_environment
    from fedunl_flwr.inprocess import run_in_process
    from fedunl_flwr.server_app import build_server_app

    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    seen: list[tuple[str, int]] = []
    fit = FedunlClient.fit

    def recording_fit(self, parameters, config):
        seen.append((str(config[protocol.PHASE]), torch.get_num_threads()))
        return fit(self, parameters, config)

    monkeypatch.setattr(FedunlClient, "fit", recording_fit)
    overrides = {"scenario": "digits-real-noniid-offline", "samples-per-client": 40,
                 "test-samples-per-client": 20, "num-server-rounds": 1, "local-epochs": 1,
                 "unlearn-rounds": 2, "strategy": "delete-retrain", "forget-scope": "class",
                 "forget-clients": "0", "forget-classes": "0", "mia-feature": "off",
                 "results-dir": str(tmp_path), "data-dir": str(data_dir)}
    before = torch.get_num_threads()
    with simulation_environment(client_cpus=1):
        run_in_process(build_server_app(overrides), build_client_app(overrides), 9)
    assert torch.get_num_threads() == before
    phases = {phase for phase, _ in seen}
    assert len(phases) == 2, seen
    by_phase = {phase: [t for p, t in seen if p == phase] for phase in phases}
    assert sorted(len(v) for v in by_phase.values()) == [2, 9]  # requester x 2 rounds; 9
    assert sorted(by_phase.values(), key=len) == [[4, 4], [1] * 9]
