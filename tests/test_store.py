"""Run store: atomic writes, configuration mismatch and corruption errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fedunl_flwr.environment import STOP_FILE_ENV
from fedunl_flwr.store import (
    CheckpointError,
    RunInterrupted,
    RunStore,
    atomic_write_bytes,
    check_arrays_match,
)


def test_atomic_write_leaves_no_temp_file_and_keeps_old_content_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a" / "f.json"
    atomic_write_bytes(path, b"one")
    assert path.read_bytes() == b"one"

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"one"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.json"]


def test_phase_folder_is_keyed_by_configuration(tmp_path):
    store = RunStore(tmp_path)
    a = store.phase("scn", "train", {"seed": 0})
    b = store.phase("scn", "train", {"seed": 1})
    assert a.path != b.path and a.path.parent == tmp_path / "scn"
    a.begin()
    a.write_arrays("global", {"w": np.arange(3.0)})
    assert not a.is_complete()
    a.write_json("summary.json", {"ok": True})
    assert a.is_complete()
    assert np.array_equal(a.read_arrays("global")["w"], np.arange(3.0))


def test_no_phase_is_marked_complete_once_the_launcher_saw_an_interrupt(tmp_path,
                                                                         monkeypatch):
    """flwr_run.py creates its stop file before it reports "interrupted": a ServerApp that
    reaches the end of a phase after that leaves it incomplete (recomputed next time)."""
    stop_file = tmp_path / "interrupted"
    monkeypatch.setenv(STOP_FILE_ENV, str(stop_file))
    phase = RunStore(tmp_path / "store").phase("scn", "train", {"seed": 0})
    phase.begin()
    phase.write_summary({"before": True})
    assert phase.is_complete()
    other = RunStore(tmp_path / "store").phase("scn", "train", {"seed": 1})
    other.begin()
    stop_file.touch()
    with pytest.raises(RunInterrupted, match="interrupted"):
        other.write_summary({"after": True})
    assert not other.is_complete()


def test_folder_of_another_configuration_is_an_error_and_untouched(tmp_path):
    store = RunStore(tmp_path)
    a = store.phase("scn", "train", {"seed": 0})
    a.begin()
    (a.path / "config.json").write_text(json.dumps({"seed": 99}))
    before = (a.path / "config.json").read_text()
    with pytest.raises(CheckpointError, match="another configuration"):
        a.begin()
    assert (a.path / "config.json").read_text() == before


def test_corrupt_checkpoint_is_a_clear_error_and_not_overwritten(tmp_path):
    phase = RunStore(tmp_path).phase("scn", "train", {"seed": 0})
    phase.begin()
    (phase.path / "global.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="corrupt"):
        phase.read_arrays("global")
    assert (phase.path / "global.npz").read_bytes() == b"not a zip"
    with pytest.raises(CheckpointError, match="missing"):
        phase.read_arrays("client-3")
    (phase.path / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="corrupt"):
        phase.check()


def test_arrays_must_match_the_model(tmp_path):
    stored = {"a": np.zeros((2, 3)), "b": np.zeros(3)}
    check_arrays_match(stored, ["a", "b"], [(2, 3), (3,)], tmp_path)
    with pytest.raises(CheckpointError, match="does not match"):
        check_arrays_match(stored, ["a", "c"], [(2, 3), (3,)], tmp_path)
    with pytest.raises(CheckpointError, match="shape"):
        check_arrays_match(stored, ["a", "b"], [(2, 4), (3,)], tmp_path)


def test_atomic_writes_follow_the_umask(tmp_path) -> None:
    import os
    import stat

    from fedunl_flwr.store import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.txt", b"x")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.txt", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


def test_a_phase_is_locked_while_it_is_computed(tmp_path) -> None:
    """``PhaseStore.exclusive``: a second holder waits for the first (a thread here: the
    lock is on open files, so it holds between threads as between processes)."""
    import threading
    import time

    store = RunStore(tmp_path).phase("s", "train", {"a": 1})
    order = []

    def second() -> None:
        with store.exclusive():
            order.append("second")

    with store.exclusive():
        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.5)
        order.append("first done")
    other.join(timeout=10)
    assert order == ["first done", "second"]


@pytest.mark.simulation
def test_two_runs_at_once_on_one_store_compute_each_phase_once(tmp_path, data_dir) -> None:
    """Two identical runs started together (separate processes, in-process grids) on one
    results folder: one computes the original, the other waits for it and loads it; every
    client's CSL record holds every round (two runs once both rewrote them)."""
    import subprocess
    import sys
    from pathlib import Path

    config = {"scenario": "mnist-iid", "num-clients": 2, "samples-per-client": 200,
              "test-samples-per-client": 20, "num-server-rounds": 12, "model-width": 8,
              "results-dir": str(tmp_path), "data-dir": str(data_dir)}
    code = ("from experiments.simulate import simulate; "
            f"print(simulate({config!r}, engine='inprocess')['train'])")
    root = Path(__file__).resolve().parents[1]
    runs = [subprocess.Popen([sys.executable, "-c", code], cwd=root, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(2)]
    logs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(log[-2000:] for log in logs)
    computed = [log for log in logs if "computing the original model" in log]
    waited = [log for log in logs if "another run is computing" in log]
    assert len(computed) == 1 and len(waited) == 1, "\n".join(log[-2000:] for log in logs)
    assert "loading the original model" in waited[0]
    folder = Path(logs[0].strip().splitlines()[-1])
    assert folder == Path(logs[1].strip().splitlines()[-1])
    for client in range(2):
        with np.load(folder / "records" / "csl" / f"client-{client}.npz") as record:
            assert record["rounds"].tolist() == list(range(1, 13))


@pytest.mark.simulation
def test_every_damaged_phase_is_refused_with_its_folder_named(tmp_path, data_dir) -> None:
    """A stored original damaged after the fact (in process): changed bytes (caught by
    the SHA-256 its summary recorded), NaN weights in a phase stored without hashes, a
    deleted config.json, a summary that is not one, a missing metrics.csv. Each stops
    the run with a CheckpointError naming the folder and what to do, and the damaged
    file stays as it was."""
    from experiments.simulate import simulate

    overrides = {"scenario": "mnist-iid", "num-clients": 2, "samples-per-client": 60,
                 "test-samples-per-client": 20, "num-server-rounds": 1, "model-width": 4,
                 "results-dir": str(tmp_path), "data-dir": str(data_dir)}
    folder = simulate(overrides, engine="inprocess")["train"]
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["checkpoint_sha256"]) == {"global.npz", "client-0.npz", "client-1.npz"}

    def refused(match: str) -> None:
        with pytest.raises(CheckpointError, match=match) as error:
            simulate(overrides, engine="inprocess")
        assert str(folder) in str(error.value) and "move" in str(error.value)

    weights = dict(np.load(folder / "global.npz"))
    nan = {k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in weights.items()}
    np.savez(folder / "global.npz", **nan)
    damaged = (folder / "global.npz").read_bytes()
    refused("changed after the phase was stored")
    assert (folder / "global.npz").read_bytes() == damaged
    unhashed = {k: v for k, v in summary.items() if k != "checkpoint_sha256"}
    (folder / "summary.json").write_text(json.dumps(unhashed))
    refused("non-finite values")
    np.savez(folder / "global.npz", **weights)
    (folder / "summary.json").write_text(json.dumps(summary))

    for name, damage, match in [
            ("config.json", None, "no config.json"),
            ("summary.json", "[]", "is not a phase summary"),
            ("metrics.csv", None, "metrics.csv is missing")]:
        kept = (folder / name).read_bytes()
        if damage is None:
            (folder / name).unlink()
        else:
            (folder / name).write_text(damage)
        refused(match)
        (folder / name).write_bytes(kept)
    assert simulate(overrides, engine="inprocess")["train"] == folder  # loads again
