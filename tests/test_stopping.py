"""Stopping a run: SIGTERM or Ctrl-C to either runner stops every process the run started
and leaves no phase that looks complete (a module of its own, so that ``pytest -n`` runs
these real runs beside the other simulation modules)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.flwr_run import process_alive

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.simulation

STOPPABLE_RUNNERS = {
    "flwr_run": ["scripts/flwr_run.py", "-c", "scenario='mnist-iid' num-clients=2 "
                 "num-server-rounds=200 samples-per-client=100 test-samples-per-client=20"],
    "experiments.run": ["-m", "experiments.run", "fair-digits-cpu",
                        *(arg for item in ("scenario='mnist-iid'", "num-clients=2",
                                           "num-server-rounds=200", "samples-per-client=100",
                                           "test-samples-per-client=20")
                          for arg in ("--set", item))],
}


#: How each runner is stopped. ``scripts/flwr_run.py``: its SIGTERM is followed by a
#: burst of SIGTERMs during the cleanup (which must not cut it short), and SIGKILL (no
#: cleanup can run: its watchdog stops what it started). Its SIGHUP handler is the
#: SIGTERM one (checked in process, tests/test_simulation_digits.py).
STOPS = {"flwr_run": ("SIGTERM", "Ctrl-C", "SIGKILL"),
         "experiments.run": ("SIGTERM", "Ctrl-C")}


@pytest.mark.parametrize("runner_name", sorted(STOPPABLE_RUNNERS))
def test_sigterm_and_ctrl_c_stop_everything_the_run_started(tmp_path, runner_name):
    """SIGTERM to the runner, or Ctrl-C as a terminal sends it (SIGINT to the runner's
    whole foreground process group), for both ways of running: the SuperLink-based
    ``scripts/flwr_run.py`` and the in-process ``python -m experiments.run``. A runner's
    runs go at once (each with its own results folder and Flower home), so the test pays
    for one start."""
    runs = {how: _start(STOPPABLE_RUNNERS[runner_name], tmp_path / how)
            for how in STOPS[runner_name]}
    started = {}
    for how, (runner, folder) in runs.items():
        log = []
        assert runner.stdout is not None
        for line in runner.stdout:  # wait until the simulation trains
            log.append(line)
            if "fedunl train round 2/200" in line:
                break
        started[how] = _processes_with(str(folder))
        assert started[how], "".join(log[-50:])
        if runner_name == "flwr_run":  # its pre-check's torch and data were released
            assert b"libtorch" not in Path(f"/proc/{runner.pid}/maps").read_bytes()
    for how, (runner, _) in runs.items():
        if how == "Ctrl-C":
            os.killpg(runner.pid, signal.SIGINT)
        elif how == "SIGTERM" and runner_name == "flwr_run":
            for _ in range(6):
                runner.send_signal(signal.SIGTERM)
                time.sleep(0.1)
        else:
            runner.send_signal(getattr(signal, how))
    for how, (runner, folder) in runs.items():
        rest = runner.communicate(timeout=120)[0]
        if how == "SIGKILL":
            assert runner.returncode == -signal.SIGKILL
        elif how == "Ctrl-C" or runner_name == "flwr_run":
            assert runner.returncode == 130, rest[-2000:]
        else:  # Ray's own SIGTERM handler, installed by ray.init in this process, ends it
            assert runner.returncode != 0, rest[-2000:]
        # Ray's workers exit on their own once the runner's group is gone: a loaded
        # machine may take some seconds (seen: 2 still there after 2 s with 3 jobs on 2
        # cores).
        deadline = time.monotonic() + 30
        while ((left := [p for p in started[how] if process_alive(p)])
               and time.monotonic() < deadline):
            time.sleep(0.5)
        assert not left, f"still running 30 s after {how}: {left}"
        phases = list(folder.glob("*/train-*"))
        assert phases and not any((p / "summary.json").exists() for p in phases)


def _start(args: list[str], folder: Path) -> tuple[subprocess.Popen, Path]:
    """A runner whose results and Flower home are in ``folder``. It starts with SIGINT
    ignored, as a background job of a non-interactive shell (a CI script) inherits it:
    Ctrl-C must still stop it."""
    env = {**os.environ, "FEDUNL_RESULTS_DIR": str(folder), "FLWR_HOME": str(folder / ".flwr")}
    runner = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    return runner, folder


def _processes_with(text: str) -> list[int]:
    """Processes whose environment mentions ``text`` (this run's results folder): the
    runner, the SuperLink, the SuperExec, the simulation and its Ray workers."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if text.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


def test_descendants_finds_grandchildren_in_their_own_sessions():
    """A child in a session of its own and its child are found, with their groups."""
    from fedunl_flwr.processes import descendants

    child = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (below := descendants(child.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        found = descendants(os.getpid())
        assert found[child.pid] == child.pid  # its own group
        (grandchild,) = below
        assert found[grandchild] == below[grandchild] == child.pid
        assert Path(f"/proc/{grandchild}/cmdline").read_bytes().startswith(b"sleep")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
