"""Torch threads of a simulated client: the machine's cores shared among the clients that
run at once.

A Ray virtual client holding one CPU computes with one torch thread (Ray sets
``OMP_NUM_THREADS`` to its CPUs). When a round sends fewer messages than the machine runs
clients at once (the fair protocol's requester alone, a FedMemEraser query to one
client), the other cores would idle: such a message computes with the cores left free.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from fedunl_flwr import protocol
from fedunl_flwr.environment import CLIENT_CPUS_ENV


def threads_for_message(cores: int, client_cpus: float, round_messages: int) -> int:
    """Torch threads for one of ``round_messages`` messages sent at once to clients that
    each hold ``client_cpus`` of ``cores`` (never fewer than one, nor than the client's
    own CPUs).

    >>> threads_for_message(cores=2, client_cpus=1, round_messages=1)
    2
    >>> threads_for_message(cores=2, client_cpus=1, round_messages=10)
    1
    """
    if cores < 1 or client_cpus <= 0 or round_messages < 1:
        raise ValueError(f"need cores >= 1, client_cpus > 0, round_messages >= 1; got "
                         f"{cores}, {client_cpus}, {round_messages}")
    at_once = max(1, min(round_messages, int(cores // client_cpus)))
    return max(1, int(client_cpus), cores // at_once)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def message_threads(config: Mapping[str, Any], simulated: bool) -> Iterator[None]:
    """Compute one message's work with :func:`threads_for_message` torch threads on a
    ``simulated`` node whose launcher set ``FEDUNL_CLIENT_CPUS``, when the message says
    how many were sent with it; the thread count is restored afterwards. Otherwise
    nothing changes (a real SuperNode keeps its own setting whatever a server sends)."""
    client_cpus = os.environ.get(CLIENT_CPUS_ENV)
    round_messages = config.get(protocol.ROUND_MESSAGES)
    if not simulated or client_cpus is None or round_messages is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads_for_message(available_cores(), float(client_cpus),
                                              int(round_messages)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
