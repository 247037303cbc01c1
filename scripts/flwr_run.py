"""Run the app with ``flwr run`` on a SuperLink this script starts and always stops.

``flwr run`` alone auto-starts a SuperLink that outlives it and exits 0 even when the
run failed. This wrapper starts its own local SuperLink (simulation mode, runtime
dependency installation disabled), streams the run's log, asks the SuperLink for the
run's final status, exits non-zero unless it finished successfully, and stops the
SuperLink and everything it started.

Usage::

    python scripts/flwr_run.py [--num-supernodes N] [--cpus-per-client C] [-c "k=v k2=v2"]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fedunl_flwr package, imported where needed
CONNECTION = "fedunl-local"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path,
                  timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"SuperLink exited early with code {process.returncode}; "
                               f"its log: {log.read_text()[-3000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"SuperLink did not open port {port} within {timeout:.0f} s")


def write_flower_config(flwr_home: Path, port: int) -> None:
    """A Flower config whose ``fedunl-local`` connection points at our SuperLink."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )


def stage_app(root: Path, into: Path) -> Path:
    """Copy the app's files into ``into``, leaving out what ``.gitignore`` names and
    ``.git``, without entering either.

    ``flwr run`` builds the app's FAB by walking every file under its folder, the
    virtual environment's tens of thousands included, before it filters them (about 5 s
    per run); the staged copy holds only the files it can keep, so it builds the same
    FAB in a fraction of that.
    """
    import pathspec

    ignore = root / ".gitignore"
    spec = pathspec.GitIgnoreSpec.from_lines(
        ignore.read_text().splitlines() if ignore.is_file() else [])
    for folder, dirs, files in os.walk(root):
        here = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if d != ".git" and not (Path(folder) / d).is_symlink()
                   and not spec.match_file(f"{(here / d).as_posix()}/")]
        for name in files:
            source = Path(folder) / name
            if source.is_symlink() or spec.match_file((here / name).as_posix()):
                continue
            (into / here).mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / here / name)
    return into


def descendant_groups(pid: int) -> set[int]:
    """Process groups of ``pid``'s descendants: the SuperLink's SuperExec starts a session
    of its own, and the simulation (with its Ray cluster) runs under it."""
    from fedunl_flwr.processes import descendants

    return set(descendants(pid).values())


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the SuperLink's process group and those of everything it started (the
    SuperExec and the simulation live in their own), SIGKILL what is left after 10 s."""
    groups = {process.pid} | descendant_groups(process.pid) - {os.getpgrp()}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
        try:
            process.wait(timeout=10)
            if sig == signal.SIGTERM:
                time.sleep(1)  # let the other groups exit too
        except subprocess.TimeoutExpired:
            continue


def run_status(env: dict, run_id: str) -> str:
    """The run's status as the SuperLink reports it (e.g. ``finished:completed``)."""
    out = subprocess.run(["flwr", "ls", CONNECTION, "--run-id", run_id, "--format", "json"],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    match = re.search(r"\{.*\}", out.stdout, re.S)
    if not match:
        return f"unknown ({out.stdout.strip()} {out.stderr.strip()})"
    runs = json.loads(match.group(0)).get("runs", [])
    return str(runs[0].get("status", "unknown")) if runs else "unknown"


def parse_overrides(items: list[str]) -> dict:
    """``["k=v k2='x'"]`` -> ``{"k": v, "k2": "x"}`` (values are TOML, as for flwr)."""
    overrides = {}
    for item in items:
        for pair in shlex.split(item, posix=False):
            key, _, value = pair.partition("=")
            try:
                overrides[key] = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"run-config {key}={value}: not a TOML value ({err}); "
                                 "strings need quotes, e.g. strategy='fedcccu'") from err
    return overrides


#: Larger simulations leave the request check to the server once the clients reported
#: (describing 1,000 clients here takes about 6 s on 2 cores).
PRECHECK_MAX_CLIENTS = 1000


def scenario_clients(items: list[str], num_supernodes: int = 0) -> int:
    """Client count of the scenario the run-config selects. Checks, before anything
    starts: keys, values, names, the request's shape, that the scenario's datasets are in
    the data folder, that the model takes their images, that they partition, and (when
    the simulation will have one node per client) each method's request against the
    clients' data, as the server would once they reported: this runner's clients are
    simulated here, so it can ask them itself, in process (up to
    ``PRECHECK_MAX_CLIENTS``)."""
    from flwr.supercore.logger import FLOWER_LOGGER

    from fedunl_flwr.client_app import (
        build_client_app,
        load_run_config,
        simulation_environment,
    )
    from fedunl_flwr.config import TRAIN_ONLY
    from fedunl_flwr.data.scenarios import (
        check_client_count,
        check_datasets,
        federated_data,
        get_scenario,
    )
    from fedunl_flwr.federation import discover_federation
    from fedunl_flwr.inprocess import InProcessGrid, acting_as_server
    from fedunl_flwr.phases import check_model_input
    from fedunl_flwr.server_app import check_names, plan_methods
    from fedunl_flwr.store import check_writable

    overrides = parse_overrides(items)
    config = load_run_config({}, overrides)
    check_names(config)
    check_datasets(config.scenario, str(config.resolved_data_dir()), config.download)
    check_client_count(config.scenario, config.num_clients, str(config.resolved_data_dir()),
                       config.download)
    check_writable(config.resolved_results_dir())
    check_model_input(config)
    # Every virtual client partitions the data the same way: a partition that fails
    # (a Dirichlet draw with empty clients) fails here, not in each client's actor.
    federated_data(config)
    count = get_scenario(config.scenario).num_clients(config.num_clients)
    if num_supernodes in (0, count) and count <= PRECHECK_MAX_CLIENTS and \
            config.strategy != TRAIN_ONLY:
        grid = InProcessGrid(build_client_app(overrides), count)
        level = FLOWER_LOGGER.level
        FLOWER_LOGGER.setLevel(logging.WARNING)  # not the run's "N clients connected"
        try:
            with acting_as_server(grid), simulation_environment():
                plan_methods(config, discover_federation(grid, count))
        finally:
            FLOWER_LOGGER.setLevel(level)
    return count


def config_error_in(line: str) -> str | None:
    """The message of a ``ConfigError`` the ServerApp raised, from a line of the run's
    log (a request the connected clients cannot serve, found once they reported: a
    simulation above ``PRECHECK_MAX_CLIENTS`` or a check made while the run goes on)."""
    found = re.search(r"ConfigError: (.+)$", line.strip())
    return found.group(1) if found else None


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


#: Signals that stop a run; ignored once the cleanup began, so a burst of them cannot cut
#: it short (it once left the SuperLink running and exited 143).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def watch(runner: int, superlink: int, stop_file: str) -> int:
    """``--watch``: a process of its own session that outlives a runner killed without
    its cleanup (SIGKILL, a crash) and then stops the SuperLink and everything it
    started, as the runner's cleanup would have. The runner kills it when it ends."""
    while process_alive(runner):
        time.sleep(0.5)
    with contextlib.suppress(OSError):  # no phase completes from now on (store.py)
        Path(stop_file).touch()
    groups = {superlink} | descendant_groups(superlink)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        time.sleep(5)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-supernodes", type=int, default=0,
                        help="simulated clients (default: the scenario's client count)")
    parser.add_argument("--cpus-per-client", type=float, default=1.0,
                        help="CPUs each virtual client reserves (2 cores -> 2 in parallel)")
    parser.add_argument("--gpus-per-client", type=float, default=0.0)
    parser.add_argument("--ray-address", default="local",
                        help="an existing Ray cluster to run the virtual clients on (its "
                             "head's HOST:PORT, see docs/deployment.md); default: a Ray "
                             "instance of the run's own")
    parser.add_argument("-c", "--run-config", action="append", default=[],
                        help='run-config overrides, e.g. -c "num-server-rounds=3"')
    parser.add_argument("--watch", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--checked", type=int, help=argparse.SUPPRESS)
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(arguments)
    if args.watch:
        runner, superlink, stop_file = args.watch
        return watch(int(runner), int(superlink), stop_file)
    # SIGTERM (and SIGINT) unwind through the finally blocks below, which stop the
    # SuperLink and everything it started. SIGINT's handler is set explicitly: a process
    # started in the background of a non-interactive shell inherits SIGINT ignored.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)  # the terminal closed
    signal.signal(signal.SIGINT, signal.default_int_handler)

    if args.checked is None:
        try:
            count = scenario_clients(args.run_config, args.num_supernodes)
        except (ValueError, OSError, RuntimeError) as err:  # fail before starting anything
            print(f"fedunl: error: {err}", file=sys.stderr)
            return 2
        # The pre-check imported torch and Flower and loaded the datasets (about 300 MiB
        # held for the whole run): go on in a fresh interpreter. Same pid, so signals,
        # the watchdog and the exit status are the runner's.
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()),
                                  "--checked", str(count), *arguments])
    num_supernodes = args.num_supernodes or args.checked
    from fedunl_flwr.environment import (
        CLIENT_CPUS_ENV,
        RAY_INLINE_BYTES,
        RAY_INLINE_ENV,
        SIMULATION_ENV,
        STOP_FILE_ENV,
    )

    env = dict(os.environ)
    # Flower's executables (and the ones the SuperLink starts) sit beside this
    # interpreter; find them even when the virtual environment is not activated.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Each run gets a Flower home of its own (its connection config names this run's
    # SuperLink): two runs started from one checkout shared `.flwr/config.toml` and one
    # asked the other's SuperLink for its status.
    state = tempfile.mkdtemp(prefix="fedunl-superlink-")
    env["FLWR_HOME"] = str(Path(state) / "flwr-home")
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env[SIMULATION_ENV] = "1"  # its virtual clients are simulated (client_app.is_simulated)
    # A round of fewer clients than fit at once computes with the idle cores (threads.py).
    env[CLIENT_CPUS_ENV] = f"{args.cpus_per_client:g}"
    # Flower's Ray backend calls ray.init() without an address, which reads RAY_ADDRESS;
    # unset, it would join any cluster a `ray start` left on this machine.
    env["RAY_ADDRESS"] = args.ray_address
    # A client message (the model) inside Ray's task messages, not its object store.
    env.setdefault(RAY_INLINE_ENV, str(RAY_INLINE_BYTES))
    stop_file = Path(state) / "interrupted"  # once it exists no phase completes (store.py)
    env[STOP_FILE_ENV] = str(stop_file)
    env.setdefault("FEDUNL_RESULTS_DIR", str(ROOT / "results"))
    # Flower 1.41 serves the runtime, control and fleet APIs on one HTTP port.
    port = free_port()
    write_flower_config(Path(env["FLWR_HOME"]), port)
    # The SuperLink writes its own copy of the log handle; ours closes once it started.
    with open(Path(state) / "superlink.log", "w") as superlink_log:
        superlink = subprocess.Popen(
            ["flower-superlink", "--insecure", "--simulation", "--isolation", "subprocess",
             "--disable-runtime-dependency-installation", "--host", "127.0.0.1",
             "--port", str(port), "--database", str(Path(state) / "state.db")],
            env=env, cwd=ROOT, start_new_session=True,
            stdout=superlink_log, stderr=subprocess.STDOUT)
    watchdog = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--watch",
                                 str(os.getpid()), str(superlink.pid), str(stop_file)],
                                cwd=ROOT, env=env,
                                start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, superlink, Path(state) / "superlink.log")
        federation = (f"num-supernodes={num_supernodes} "
                      f"client-resources-num-cpus={args.cpus_per_client:g} "
                      f"client-resources-num-gpus={args.gpus_per_client:g}")
        app = stage_app(ROOT, Path(state) / "app")
        command = ["flwr", "run", str(app), CONNECTION, "--stream", "--federation-config",
                   federation]
        for item in args.run_config:
            command += ["--run-config", item]
        print("+", " ".join(command), flush=True)
        run = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        if run.stdout is None:
            raise RuntimeError("flwr run started without its output pipe")
        run_id, request_error = None, None
        try:
            for line in run.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                found = re.search(r"Successfully started run (\d+)", line)
                run_id = found.group(1) if found else run_id
                request_error = request_error or config_error_in(line)
            run.wait()
        except KeyboardInterrupt:
            _ignore_stop_signals()
            stop_file.touch()
            run.terminate()
            print("fedunl: interrupted: stopping the SuperLink, the simulation and its "
                  "clients", file=sys.stderr, flush=True)
            return 130
        if run_id is None:
            print(f"fedunl: the run did not start (flwr exit code {run.returncode})",
                  file=sys.stderr)
            return 1
        status = run_status(env, run_id)
        print(f"fedunl: run {run_id} status: {status}", flush=True)
        if "completed" in status:
            return 0
        if request_error:
            print(f"fedunl: error: {request_error}", file=sys.stderr, flush=True)
            return 2
        return 1
    finally:
        _ignore_stop_signals()
        stop_file.touch()  # whatever still runs now completes no phase
        stop_process_group(superlink)
        watchdog.kill()
        watchdog.wait()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
