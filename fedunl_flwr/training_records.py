"""Training records: history of the original training that a method declares it needs.

A method that unlearns from the training history (FedEraser's per-round client updates,
later FedRecovery's) declares a :class:`RecordSpec` per kind of history. The original
training then runs a :class:`RoundRecorder` for each: server-side, it sees every round's
global model and the clients' returned models and streams what it keeps to
``<train phase>/records/<spec folder>/`` one round at a time (nothing accumulates in
memory). The specs join the training phase's key only when a method asks for them, so
an original stored without records stays valid and is reused by every method that needs
none (training is deterministic: an original trained with records has the same weights).

Two records are kept for every original and never join a key: the clients' last local
models (server-side, :class:`LastLocalModels`) and the clients' cumulative sample losses
(client-side: the train messages of the original name its phase folder in
``records-to``, and each client adds its per-sample losses to
:func:`client_record_path`). ``records_bytes`` counts both.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedunl_flwr.store import CheckpointError, PhaseStore, atomic_write_bytes

#: Sub-folder of a training phase that holds its records.
RECORDS_FOLDER = "records"
#: Client-side record of every original training: each client's per-sample cumulative
#: training loss (CSL, seed 001 H.2), ``records/csl/client-<k>.npz``.
CSL_FOLDER = "csl"


class RecordSpec(Protocol):
    """A kind of training history: its folder name, the settings that join the training
    phase's key, the server-side recorder that writes it (None for a record the clients
    write) and what each client's train messages of the original must carry for it."""

    @property
    def folder(self) -> str: ...

    def key(self) -> dict[str, Any]: ...

    def recorder(self, folder: Path) -> RoundRecorder | None: ...

    def train_config(self, partition_id: int) -> dict[str, Any]: ...


class RoundRecorder(Protocol):
    """Called by the training strategy once per aggregated round."""

    def record(self, server_round: int, global_arrays: Mapping[str, np.ndarray],
               client_arrays: Mapping[int, Mapping[str, np.ndarray]],
               weights: Mapping[int, float]) -> None:
        ...


def records_key(specs: tuple[RecordSpec, ...]) -> dict[str, Any]:
    """The entry the specs add to the training phase's key ({} when there are none)."""
    return {"records": {spec.folder: spec.key() for spec in specs}} if specs else {}


def records_bytes(store: PhaseStore) -> dict[str, int]:
    """Bytes on disk of each record folder of a training phase."""
    root = store.path / RECORDS_FOLDER
    if not root.is_dir():
        return {}
    return {folder.name: sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            for folder in sorted(root.iterdir()) if folder.is_dir()}


def client_record_path(results_dir: Path, phase_folder: str, kind: str,
                       partition_id: int) -> Path:
    """Where client ``partition_id`` keeps its record ``kind`` (e.g. :data:`CSL_FOLDER`)
    for the training phase ``phase_folder`` (``<scenario>/train-<hash>``,
    :func:`fedunl_flwr.protocol.records_folder`) under its own results dir: in a
    simulation the run store's phase folder itself; on a real SuperNode a folder of the
    same name under the node's results dir (what it holds leaves the node only through
    the queries that read it)."""
    return (results_dir / phase_folder / RECORDS_FOLDER / kind
            / f"client-{partition_id}.npz")


def write_client_record(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a client-side record file atomically (no pickled arrays)."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())


def read_client_record(path: Path, names: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The arrays ``names`` of a client-side record file; None when it is missing or
    unreadable (the record then starts afresh, or its query says it is not there)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in names}
    except (OSError, ValueError, KeyError, EOFError):
        return None


# --- the clients' last local models (every training phase) --------------------------------
class LastLocalModels:
    """Each client's last returned model as ``client-<k>.npz`` in the phase folder,
    rewritten whenever the client trains (nothing is held in memory between rounds).
    Every training phase records them (the fair protocol's cached contributions and
    Halimi's reference read them), so they never join a key."""

    def __init__(self, folder: Path) -> None:
        self.store = PhaseStore(folder, {})

    def record(self, server_round: int, global_arrays: Mapping[str, np.ndarray],
               client_arrays: Mapping[int, Mapping[str, np.ndarray]],
               weights: Mapping[int, float]) -> None:
        for pid, arrays in sorted(client_arrays.items()):
            self.store.write_arrays(f"client-{pid}", arrays)


# --- per-round client updates ------------------------------------------------------------
@dataclass(frozen=True)
class ClientUpdates:
    """Every client's update ``U_k^t = w_k^t - M^t`` (its returned model minus the global
    model it started from), and ``M^t``, at rounds ``t = 1, 1 + every, 1 + 2 every, ...``
    (FedEraser's retained rounds, Liu et al. 2021 §4).

    One file per retained round, ``round-<t>.npz``: ``global/<tensor>`` and
    ``client-<k>/<tensor>`` (float32 as trained), plus ``round-<t>.json`` with the
    clients and their aggregation weights.
    """

    every: int = 1

    @property
    def folder(self) -> str:
        return f"client-updates-every-{self.every}"

    def key(self) -> dict[str, Any]:
        return {"every": self.every}

    def retained(self, server_round: int) -> bool:
        return (server_round - 1) % self.every == 0

    def recorder(self, folder: Path) -> ClientUpdatesRecorder:
        return ClientUpdatesRecorder(self, folder)

    def train_config(self, partition_id: int) -> dict[str, Any]:
        return {}


class ClientUpdatesRecorder:
    """Writes :class:`ClientUpdates` round by round."""

    def __init__(self, spec: ClientUpdates, folder: Path) -> None:
        self.spec = spec
        self.folder = folder

    def record(self, server_round: int, global_arrays: Mapping[str, np.ndarray],
               client_arrays: Mapping[int, Mapping[str, np.ndarray]],
               weights: Mapping[int, float]) -> None:
        if not self.spec.retained(server_round):
            return
        arrays = {f"global/{name}": value for name, value in global_arrays.items()}
        for pid, model in sorted(client_arrays.items()):
            for name, value in model.items():
                arrays[f"client-{pid}/{name}"] = value - global_arrays[name]
        store = PhaseStore(self.folder, {})
        store.write_arrays(f"round-{server_round:04d}", arrays)
        store.write_json(f"round-{server_round:04d}.json",
                         {"round": server_round,
                          "weights": {str(pid): float(w) for pid, w in sorted(weights.items())}})


@dataclass(frozen=True)
class RoundUpdates:
    """One retained round as stored: the global model it started from, each client's
    update and aggregation weight."""

    server_round: int
    global_arrays: dict[str, np.ndarray]
    updates: dict[int, dict[str, np.ndarray]]
    weights: dict[int, float]


def recorded_rounds(train_store: PhaseStore, spec: ClientUpdates) -> list[int]:
    """The retained rounds stored for ``spec`` (a clear error if none)."""
    folder = train_store.path / RECORDS_FOLDER / spec.folder
    rounds = sorted(int(path.stem.split("-")[1]) for path in folder.glob("round-*.json"))
    if not rounds:
        raise CheckpointError(f"{folder} holds no recorded client updates; move "
                              f"{train_store.path} away to retrain the original with them")
    return rounds


def read_client_updates(train_store: PhaseStore, spec: ClientUpdates) -> Iterator[RoundUpdates]:
    """The stored retained rounds in order, read one at a time."""
    folder = train_store.path / RECORDS_FOLDER / spec.folder
    store = PhaseStore(folder, {})
    for server_round in recorded_rounds(train_store, spec):
        meta_path = folder / f"round-{server_round:04d}.json"
        meta = json.loads(meta_path.read_text())
        arrays = store.read_arrays(meta_path.stem)
        global_arrays = {name.split("/", 1)[1]: value for name, value in arrays.items()
                         if name.startswith("global/")}
        updates: dict[int, dict[str, np.ndarray]] = {}
        for name, value in arrays.items():
            owner, _, tensor = name.partition("/")
            if owner.startswith("client-"):
                updates.setdefault(int(owner.split("-")[1]), {})[tensor] = value
        yield RoundUpdates(int(meta["round"]), global_arrays, updates,
                           {int(pid): float(w) for pid, w in meta["weights"].items()})
