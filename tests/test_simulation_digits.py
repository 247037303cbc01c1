"""End to end: real `flwr run` / Ray simulations of the offline digits scenario."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.simulate import simulate
from fedunl_flwr.store import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
# Two local epochs: with one, the MNIST clients reached 52-53% against the 50% asserted
# (1 and 2 torch threads); with two, 65-68% (UCI 86%, USPS 91%).
RUN_CONFIG = ("samples-per-client=300 test-samples-per-client=100 num-server-rounds=8 "
              "local-epochs=2")
pytestmark = pytest.mark.simulation


def flwr_run(results: Path, *config: str, ray_address: str = "local"
             ) -> subprocess.CompletedProcess:
    env = {**os.environ, "FEDUNL_RESULTS_DIR": str(results),
           "FLWR_HOME": str(results / ".flwr")}
    command = [sys.executable, "scripts/flwr_run.py", "--ray-address", ray_address]
    for item in config:
        command += ["-c", item]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    results = tmp_path_factory.mktemp("results")
    first = flwr_run(results, RUN_CONFIG)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    folders = list((results / "digits-real-noniid-offline").glob("train-*"))
    assert len(folders) == 1
    return results, folders[0], first.stdout


def test_flwr_run_trains_every_domain_well_above_chance(trained):
    _, folder, log = trained
    summary = json.loads((folder / "summary.json").read_text())
    per_client = summary["per_client_accuracy"]
    assert sorted(per_client, key=int) == [str(i) for i in range(9)]
    groups = {"mnist": [0, 1, 2], "uci-digits": [3, 4, 5], "usps": [6, 7, 8]}
    for name, members in groups.items():
        accuracy = np.mean([per_client[str(p)] for p in members])
        print(name, "clients' mean test accuracy", round(float(accuracy), 3))
        assert accuracy > 0.5, f"{name} clients reach only {accuracy:.2f} (chance 0.10)"
    assert 0.5 < summary["global_accuracy"] <= 1.0
    # per-client per-class accuracy keyed by partition id and class id strings
    assert set(summary["per_client_class_accuracy"]["0"]) == {str(c) for c in range(10)}
    assert "fedunl train round 8/8" in log and "ETA 0 s" in log
    assert "Aggregated MetricRecord" not in log and "Final results:" not in log
    assert "fedunl train round 1/8" in log and " | ETA " in log.split("round 1/8", 1)[1][:120]
    assert "per-client per-class test accuracy" in log


def test_run_store_holds_models_metrics_and_tables(trained):
    _, folder, _ = trained
    assert sorted(p.name for p in folder.glob("client-*.npz")) == \
        sorted(f"client-{i}.npz" for i in range(9))
    metrics = pd.read_csv(folder / "metrics.csv")
    assert metrics["round"].tolist() == list(range(1, 9))
    assert metrics["accuracy"].iloc[-1] > metrics["accuracy"].iloc[0]
    table = pd.read_csv(folder / "accuracy.csv", index_col=0)
    assert list(table.index)[-1] == "global" and "all" in table.columns
    assert (folder / "accuracy.md").read_text().startswith("|")
    assert json.loads((folder / "config.json").read_text())["scenario"] == \
        "digits-real-noniid-offline"


def test_second_run_loads_the_checkpoint_instead_of_training(tmp_path, data_dir, caplog):
    """The run store, in process (no Ray: what is proven is the server's loading)."""
    overrides = {"results-dir": str(tmp_path), "samples-per-client": 60,
                 "test-samples-per-client": 20, "num-server-rounds": 2}
    folder = simulate(overrides, engine="inprocess")["train"]
    before = (folder / "global.npz").read_bytes()
    caplog.clear()
    with caplog.at_level("INFO", logger="flwr"):
        assert simulate(overrides, engine="inprocess")["train"] == folder
    assert "loading the original model" in caplog.text
    assert "fedunl train round" not in caplog.text
    assert (folder / "global.npz").read_bytes() == before


def flwr_run_refused(monkeypatch, capsys, tmp_path: Path, config: str) -> str:
    """``scripts/flwr_run.py -c config`` in process, with starting any process made an
    error: its exit status must be 2 before it starts a SuperLink. Returns its stderr."""
    import signal

    import scripts.flwr_run as runner

    def no_process(*args, **kwargs):
        raise AssertionError(f"started a process: {args[0]}")

    monkeypatch.setattr(runner.subprocess, "Popen", no_process)
    monkeypatch.setattr(runner.os, "execv", no_process)
    monkeypatch.setenv("FEDUNL_RESULTS_DIR", str(tmp_path))
    handlers = {sig: signal.getsignal(sig) for sig in runner.STOP_SIGNALS}
    try:
        assert runner.main(["-c", config]) == 2
        # A closed terminal (SIGHUP) stops the run as SIGTERM does.
        assert signal.getsignal(signal.SIGHUP) is signal.getsignal(signal.SIGTERM) \
            is runner._raise_interrupt
    finally:  # main installs its own handlers: this test process keeps its own
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return capsys.readouterr().err


def test_bad_run_config_fails_before_starting_anything(tmp_path, monkeypatch, capsys):
    error = flwr_run_refused(monkeypatch, capsys, tmp_path, "scenario='no-such-scenario'")
    assert "unknown scenario 'no-such-scenario'" in error


def test_missing_dataset_fails_before_starting_anything(tmp_path, monkeypatch, capsys):
    error = flwr_run_refused(monkeypatch, capsys, tmp_path,
                             f"data-dir='{tmp_path / 'empty'}' num-server-rounds=1")
    assert "mnist" in error and str(tmp_path / "empty") in error


@pytest.mark.parametrize("config, message", [
    ("strategy='bogus'", "unknown strategy 'bogus'"),
    ("strategy='fedcccu' forget-clients='42' forget-classes='0'", "forget-clients [42] unknown"),
    ("strategy='delete-retrain' forget-clients='0' forget-classes=''", "needs forget-classes"),
    ("strategy='fedmemeraser' forget-scope='samples' forget-samples='0:abc'",
     "forget-samples ids must be comma-separated integers"),
    ("num-server-rounds=abc", "num-server-rounds=abc"),
    ("seed=-1", "seed must be >= 0"),
    ("selection='bogus'", "selection must be one of"),
    ("scenario='mnist-iid' num-clients=100000",
     "100000 clients cannot share the 60000 training samples of mnist"),
    ("scenario='mnist-iid' num-clients=4 strategy='fedmemeraser' forget-scope='samples' "
     "forget-samples='0:999999'", "999999"),
    ("scenario='mnist-dir.'", "'.' is not a dirichlet alpha; write e.g. mnist-dir0.5"),
    ("scenario='mnist-iid' num-clients=4 strategy='fedmemeraser' forget-scope='client' "
     "forget-clients='0' unlearn-rounds=0", "unlearn-rounds must be >= 1"),
    ("scenario='mnist-iid' num-clients=2 strategy='fedmemeraser' forget-scope='client' "
     "forget-clients='0,1'", "nobody would remain"),
])
def test_bad_names_and_requests_fail_before_starting_anything(tmp_path, monkeypatch, capsys,
                                                              config, message):
    assert message in flwr_run_refused(monkeypatch, capsys, tmp_path, config)


def test_images_the_model_cannot_take_are_refused_before_anything_starts(
        tmp_path, monkeypatch, capsys):
    """A data folder whose MNIST images are 1x1 (the CNN's pooling needs more): refused
    by the runner in seconds, not by every client's first training round."""
    rng = np.random.default_rng(0)
    (tmp_path / "tiny").mkdir()
    np.savez(tmp_path / "tiny" / "mnist.npz",
             x_train=rng.integers(0, 255, (200, 1, 1), dtype=np.uint8),
             y_train=np.arange(200) % 10,
             x_test=rng.integers(0, 255, (50, 1, 1), dtype=np.uint8), y_test=np.arange(50) % 10)
    error = flwr_run_refused(monkeypatch, capsys, tmp_path,
                             f"scenario='mnist-iid' data-dir='{tmp_path / 'tiny'}'")
    assert "model 'cnn' cannot take the 1x1 images of mnist (scenario mnist-iid)" in error


def test_a_results_dir_that_cannot_be_written_is_refused_before_anything_starts(
        tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    error = flwr_run_refused(monkeypatch, capsys, tmp_path,
                             f"results-dir='{tmp_path / 'a-file' / 'results'}'")
    assert f"results-dir {tmp_path / 'a-file' / 'results'} cannot be written" in error


def test_a_request_the_clients_cannot_serve_is_refused_before_the_run_starts(
        tmp_path, monkeypatch, capsys):
    """Client 0 holds no sample of class 2 with this split: a fact of the clients' data,
    which the runner asks its simulated clients in process before it starts anything
    (the server's own check, once real clients reported, is test_fair_unlearning's)."""
    error = flwr_run_refused(monkeypatch, capsys, tmp_path,
                             "dirichlet-alpha=0.05 samples-per-client=300 "
                             "test-samples-per-client=100 strategy='delete-retrain' "
                             "forget-clients='0' forget-classes='2' num-server-rounds=1")
    last = error.strip().splitlines()[-1]
    assert last.startswith("fedunl: error: client 0 holds no training sample of class(es) [2]")


def test_a_servers_config_error_becomes_the_runners_last_line():
    """What the runner relays when the server refuses a request once clients reported:
    the traceback's last line, as Flower's SuperExec prints it."""
    from scripts.flwr_run import config_error_in

    line = ("fedunl_flwr.config.ConfigError: client 3 holds no training sample of "
            "class(es) [7]; its class counts are [1, 2]\n")
    assert config_error_in(line) == ("client 3 holds no training sample of class(es) [7]; "
                                     "its class counts are [1, 2]")
    assert config_error_in("INFO :      [ROUND 1/3]") is None


def test_a_diverging_run_fails_and_stores_no_complete_phase(tmp_path, data_dir):
    """In process: the server's check is what is proven (flwr_run.py's exit 1 for a
    failed run is the too-few-nodes test's)."""
    from fedunl_flwr.fedavg_train import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"the training diverged.*lower learning-rate"):
        simulate({"results-dir": str(tmp_path), "learning-rate": 1e6, "num-server-rounds": 2,
                  "samples-per-client": 100, "test-samples-per-client": 50},
                 engine="inprocess")
    assert not list(tmp_path.rglob("summary.json"))  # nothing looks complete


def test_too_few_simulated_nodes_fail_within_seconds_in_two_runs_at_once(tmp_path):
    """Two runners started together from one checkout, with one FLWR_HOME in their
    environment: each runs on its own SuperLink with its own Flower home, so each
    reports its own run (they once shared the connection config)."""
    env = {**os.environ, "FEDUNL_RESULTS_DIR": str(tmp_path),
           "FLWR_HOME": str(tmp_path / ".flwr")}
    runners = [subprocess.Popen([sys.executable, "scripts/flwr_run.py", "--num-supernodes",
                                 str(count)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for count in (2, 3)]
    for count, runner in zip((2, 3), runners, strict=True):
        output = runner.communicate(timeout=300)[0]
        assert runner.returncode == 1, output[-3000:]
        assert f"expected 9 clients, {count} connected after 10 s" in output, output[-3000:]
        assert "num-supernodes=9" in output
    assert not (tmp_path / ".flwr").exists()


def test_corrupt_checkpoint_stops_the_run_and_is_kept(tmp_path, data_dir):
    overrides = {"results-dir": str(tmp_path), "samples-per-client": 60,
                 "test-samples-per-client": 20, "num-server-rounds": 1}
    paths = simulate(overrides, engine="inprocess")
    checkpoint = paths["train"] / "global.npz"
    checkpoint.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"global.npz changed after the phase was stored"):
        simulate(overrides, engine="inprocess")
    # A phase stored before summaries recorded hashes: the file is found corrupt on reading.
    summary = paths["train"] / "summary.json"
    summary.write_text(json.dumps({k: v for k, v in json.loads(summary.read_text()).items()
                                   if k != "checkpoint_sha256"}))
    with pytest.raises(CheckpointError, match=r"global.npz is corrupt"):
        simulate(overrides, engine="inprocess")
    assert checkpoint.read_bytes() == b"garbage"


def test_flowers_echo_of_the_progress_lines_is_filtered():
    import logging

    from fedunl_flwr.server_app import FlowerEchoFilter

    echo = FlowerEchoFilter()

    def shown(message: str) -> bool:
        return echo.filter(logging.LogRecord("flwr", logging.INFO, "", 0, message, None, None))

    assert shown("[ROUND 2/3]") and shown("fedunl train round 2/3 | 1.0 s")
    assert not shown("\t└──> Aggregated MetricRecord: {'train-loss': 0.3}")
    assert not shown("Final results:") and not shown("") and not shown("\tGlobal Arrays:")
    assert not shown("")  # the dump's closing blank line
    assert shown("fedunl: results in /tmp/x")  # the dump is over
    assert shown("")


def test_client_tracebacks_are_shortened_to_their_last_line(monkeypatch):
    import logging

    from fedunl_flwr.server_app import ShortTracebackFilter

    short = ShortTracebackFilter()
    trace = "Traceback (most recent call last):\n  File x\nRuntimeError: injected failure\n"
    error = logging.LogRecord("flwr", logging.ERROR, "", 0, "%s", (trace,), None)
    assert short.filter(error)
    assert error.getMessage().startswith("RuntimeError: injected failure (traceback shortened")
    table = logging.LogRecord("flwr", logging.INFO, "", 0, "| a |\n| b |", None, None)
    assert short.filter(table) and table.getMessage() == "| a |\n| b |"  # tables kept
    monkeypatch.setenv("FEDUNL_FULL_TRACEBACKS", "1")
    whole = logging.LogRecord("flwr", logging.ERROR, "", 0, trace, None, None)
    assert short.filter(whole) and whole.getMessage() == trace


def test_the_staged_app_holds_what_flwr_would_package_and_nothing_ignored(tmp_path):
    """scripts/flwr_run.py hands ``flwr run`` a copy of the app without ignored folders
    (the venv) and ``.git``: the FAB built from it is the one built from the checkout."""
    from scripts.flwr_run import stage_app

    app = tmp_path / "app"
    (app / ".git").mkdir(parents=True)
    (app / ".git" / "HEAD").write_text("ref")
    (app / ".venv" / "lib").mkdir(parents=True)
    (app / ".venv" / "lib" / "big.py").write_text("x = 1")
    (app / "pkg" / "__pycache__").mkdir(parents=True)
    (app / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"\0")
    (app / "pkg" / "m.py").write_text("y = 2")
    (app / "pkg" / "old.fab").write_bytes(b"\0")
    (app / ".gitignore").write_text(".venv/\n__pycache__/\n*.fab\n")
    (app / "link.py").symlink_to(app / "pkg" / "m.py")
    staged = stage_app(app, tmp_path / "staged")
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()
                  ) == [".gitignore", "pkg/m.py"]
