"""Run store: one folder per configuration, atomic writes, checked checkpoints."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
from flwr.supercore import log

from fedunl_flwr.config import config_hash
from fedunl_flwr.environment import STOP_FILE_ENV


class CheckpointError(RuntimeError):
    """A stored checkpoint is corrupt or belongs to another configuration."""


class RunInterrupted(RuntimeError):
    """The launcher interrupted the run: no phase may be marked complete any more."""


def check_not_interrupted() -> None:
    """Raise :class:`RunInterrupted` once the launcher's stop file exists."""
    stop_file = os.environ.get(STOP_FILE_ENV)
    if stop_file and os.path.exists(stop_file):
        raise RunInterrupted(f"the run was interrupted ({stop_file} exists): the phase is "
                             "not marked complete")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and ``os.replace``.

    The file gets the mode a plain ``open`` would give (0666 minus the umask), not the
    0600 of the temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class PhaseStore:
    """The folder of one phase (training, unlearning, ...) of one configuration.

    Parameters
    ----------
    path : Path
        The folder (``<root>/<scenario>/<phase>-<hash>``).
    key : Mapping[str, Any]
        Everything that determines the phase's result; saved as ``config.json``.
    """

    def __init__(self, path: Path, key: Mapping[str, Any]) -> None:
        self.path = path
        self.key = dict(key)

    def check(self) -> None:
        """Raise if the folder holds results of another configuration, or a summary
        without the configuration it belongs to."""
        stored = self.path / "config.json"
        if not stored.exists():
            if (self.path / "summary.json").exists():
                raise CheckpointError(f"{self.path} has a summary.json but no config.json, so "
                                      "which configuration it holds cannot be checked; move "
                                      "the folder away to recompute it")
            return
        try:
            other = json.loads(stored.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{stored} is corrupt ({err}); move the folder away "
                                  "to recompute it") from err
        if other != json.loads(json.dumps(self.key)):
            raise CheckpointError(
                f"{self.path} holds results of another configuration; it is left "
                "untouched. Move it away, or use another results-dir."
            )

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this phase's lock (``.<folder>.lock`` beside it): a second run of the same
        configuration on the same store waits here until the first finished the phase,
        then loads it, instead of writing the same files at the same time (two runs once
        both rewrote each client's CSL record, and both stored a wrong agreement)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f".{self.path.name}.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(INFO, "fedunl: another run is computing %s; waiting for it", self.path)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def is_complete(self) -> bool:
        """True when the phase finished (its ``summary.json`` was written last)."""
        self.check()
        return (self.path / "summary.json").exists()

    def begin(self) -> None:
        """Create the folder and record the configuration."""
        self.check()
        self.write_json("config.json", self.key)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json``, which marks the phase complete (never after an
        interrupt: :func:`check_not_interrupted`)."""
        check_not_interrupted()
        self.write_json("summary.json", summary)

    def write_json(self, name: str, value: Any) -> None:
        atomic_write_bytes(self.path / name,
                           json.dumps(value, indent=2, sort_keys=True).encode())

    def read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path} is corrupt ({err})") from err

    def write_text(self, name: str, text: str) -> None:
        atomic_write_bytes(self.path / name, text.encode())

    def write_arrays(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Save named arrays as ``<name>.npz`` (no pickle)."""
        import io

        buffer = io.BytesIO()
        # allow_pickle=False: read_arrays refuses pickled arrays, so never write one.
        np.savez(buffer, allow_pickle=False, **{k: np.asarray(v) for k, v in arrays.items()})
        atomic_write_bytes(self.path / f"{name}.npz", buffer.getvalue())

    def file_digests(self, names: list[str]) -> dict[str, str]:
        """SHA-256 of each named file of the folder (stored in the phase's summary)."""
        return {name: hashlib.sha256((self.path / name).read_bytes()).hexdigest()
                for name in names}

    def check_digests(self, recorded: Mapping[str, str]) -> None:
        """Raise unless each file still has the SHA-256 its summary recorded."""
        for name, digest in sorted(recorded.items()):
            path = self.path / name
            if not path.exists():
                raise CheckpointError(f"checkpoint {path} is missing; move {self.path} away "
                                      "to recompute it")
            if self.file_digests([name])[name] != digest:
                raise CheckpointError(
                    f"checkpoint {path} changed after the phase was stored (its SHA-256 "
                    f"differs from the one in summary.json); it is left untouched: move "
                    f"{self.path} away to recompute it")

    def read_arrays(self, name: str) -> dict[str, np.ndarray]:
        """Load ``<name>.npz``; a corrupt file is a :class:`CheckpointError`."""
        path = self.path / f"{name}.npz"
        if not path.exists():
            raise CheckpointError(f"checkpoint {path} is missing; move {self.path} away "
                                  "to recompute it")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            raise CheckpointError(f"checkpoint {path} is corrupt ({err}); it is left "
                                  f"untouched: move {self.path} away to recompute it") from err
        bad = [k for k, v in arrays.items()
               if np.issubdtype(v.dtype, np.inexact) and not np.isfinite(v).all()]
        if bad:
            raise CheckpointError(f"checkpoint {path} holds non-finite values (NaN or inf) in "
                                  f"{', '.join(bad[:3])}; it is left untouched: move "
                                  f"{self.path} away to recompute it")
        return arrays


def check_writable(root: Path) -> None:
    """Raise ``ValueError`` unless the run-store root can be created and written (a
    runner checks it before anything starts)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        raise ValueError(f"results-dir {root} cannot be written ({err.strerror or err}); "
                         "choose another results-dir or fix its permissions") from None


class RunStore:
    """Root of all results: ``<root>/<scenario>/<phase>-<config hash>/``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def phase(self, scenario: str, phase: str, key: Mapping[str, Any]) -> PhaseStore:
        return PhaseStore(self.root / scenario / f"{phase}-{config_hash(key)}", key)

    def index_path(self, run_key: Mapping[str, Any]) -> Path:
        """Where the server lists the phase folders of the run with ``run_key``."""
        return self.root / "index" / f"run-{config_hash(run_key)}.json"

    def write_index(self, run_key: Mapping[str, Any], folders: Mapping[str, Path]) -> Path:
        """Record which phase folders a completed run wrote (its ``config`` included)."""
        path = self.index_path(run_key)
        payload = {"config": run_key, "folders": {k: str(v) for k, v in folders.items()}}
        atomic_write_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode())
        return path

    def read_index(self, run_key: Mapping[str, Any]) -> dict[str, Path] | None:
        """The phase folders the server recorded for ``run_key`` (None: not recorded)."""
        path = self.index_path(run_key)
        if not path.exists():
            return None
        return {k: Path(v) for k, v in json.loads(path.read_text())["folders"].items()}


def check_arrays_match(stored: Mapping[str, np.ndarray], keys: list[str],
                       shapes: list[tuple[int, ...]], where: Path) -> None:
    """Raise :class:`CheckpointError` if stored arrays do not fit the model."""
    if list(stored) != keys:
        raise CheckpointError(f"checkpoint in {where} does not match the model's "
                              "parameters (another model or configuration)")
    for key, shape in zip(keys, shapes, strict=True):
        if tuple(stored[key].shape) != tuple(shape):
            raise CheckpointError(f"checkpoint in {where}: {key} has shape "
                                  f"{stored[key].shape}, model expects {shape}")
