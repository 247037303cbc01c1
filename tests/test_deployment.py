"""A real deployment on loopback: TLS, SuperNode authentication, `data-file` nodes.

The SuperLink (Flower 1.41 serves its Fleet, Control and runtime APIs on one HTTPS port)
runs with a certificate signed by a CA this test creates; two SuperNodes trust that CA
(`--root-certificates`), authenticate with keys registered through the Flower CLI
(`flwr supernode register`) and read their own `.npz` files; `flwr run` reaches the
SuperLink over TLS. A third SuperNode, whose key was never registered, is refused. Then
one SuperNode is killed in the middle of a second run: the run fails and names it.
The commands are the ones in docs/deployment.md, "Deploy on real machines".
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from scripts.flwr_run import stage_app

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def make_certificates(folder: Path) -> None:
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def write_key(key, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))

    def certificate(subject, issuer, public_key, signing_key, extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=2)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedunl test CA")])
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key,
                     [(x509.BasicConstraints(ca=True, path_length=None), True)])
    server = certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), ca_name,
        server_key.public_key(), ca_key,
        [(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                       x509.DNSName("localhost")]), False),
         (x509.BasicConstraints(ca=False, path_length=None), True),
         (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)])
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    write_key(server_key, folder / "server.key")


def make_node_key(folder: Path, name: str) -> Path:
    """An EC key pair in OpenSSH format, as Flower's SuperNode authentication expects."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private = folder / name
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.with_suffix(".pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
    return private


def make_site(data_dir: Path, path: Path, index: int) -> None:
    """A node's own data file: 200 MNIST training and 50 test images."""
    with np.load(data_dir / "mnist.npz") as data:
        train, test = slice(200 * index, 200 * (index + 1)), slice(50 * index, 50 * (index + 1))
        np.savez(path, x_train=data["x_train"][train], y_train=data["y_train"][train].astype(
            np.int64), x_test=data["x_test"][test], y_test=data["y_test"][test].astype(np.int64))


@pytest.mark.deployment
def test_tls_deployment_with_authenticated_data_file_nodes(tmp_path, data_dir) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "FLWR_HOME": str(tmp_path / "flwr-home"),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    make_certificates(tmp_path)
    keys = {name: make_node_key(tmp_path, name) for name in ("node0", "node1", "rogue")}
    for index in range(2):
        make_site(data_dir, tmp_path / f"site{index}.npz", index)
    link = free_port()
    started: list[subprocess.Popen] = []
    app = str(stage_app(ROOT, tmp_path / "app"))  # `flwr run .` without walking the venv

    def start(name: str, command: list[str]) -> subprocess.Popen:
        # The process writes its own copy of the log handle; ours closes once it started.
        with open(tmp_path / f"{name}.log", "w") as log_file:
            process = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True,
                                       stdout=log_file, stderr=subprocess.STDOUT)
        started.append(process)
        return process

    def flwr(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=env, cwd=ROOT, text=True,
                              capture_output=True, timeout=timeout)

    try:
        superlink = start("superlink", [
            str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(tmp_path / "ca.crt"),
            "--ssl-certfile", str(tmp_path / "server.pem"),
            "--ssl-keyfile", str(tmp_path / "server.key"), "--enable-supernode-auth",
            "--isolation", "subprocess", "--database", str(tmp_path / "state.db"),
            "--host", "127.0.0.1", "--port", str(link),
            "--disable-runtime-dependency-installation"])
        deadline = time.monotonic() + 60
        while not port_open(link):
            assert superlink.poll() is None, (tmp_path / "superlink.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "SuperLink did not open its port"
            time.sleep(0.3)
        (tmp_path / "flwr-home").mkdir(exist_ok=True)
        (tmp_path / "flwr-home" / "config.toml").write_text(
            '[superlink]\ndefault = "tls-local"\n\n[superlink.tls-local]\n'
            f'address = "127.0.0.1:{link}"\nroot-certificates = "{tmp_path / "ca.crt"}"\n')

        def supernode(name: str, index: int, *extra: str) -> subprocess.Popen:
            return start(name, [
                str(BIN / "flower-supernode"), "--root-certificates", str(tmp_path / "ca.crt"),
                "--superlink", f"127.0.0.1:{link}", "--port", str(free_port()),
                "--isolation", "subprocess", "--auth-supernode-private-key", str(keys[name]),
                "--node-config", f"partition-id={index} data-file='{tmp_path}/site{index}.npz'",
                *extra])

        nodes = []
        for index in range(2):
            registered = flwr("supernode", "register", str(keys[f"node{index}"].with_suffix(
                ".pub")), "tls-local", timeout=60)
            assert registered.returncode == 0, registered.stdout + registered.stderr
            nodes.append(supernode(f"node{index}", index))
        rogue = supernode("rogue", 0, "--max-retries", "2")

        run = flwr("run", app, "tls-local", "--stream", "--run-config",
                   "scenario='mnist-iid' num-clients=2 num-server-rounds=1 "
                   f"samples-per-client=100 test-samples-per-client=50 "
                   f"results-dir='{tmp_path / 'results'}'")
        output = run.stdout + run.stderr
        run_id = re.search(r"Successfully started run (\d+)", output)
        assert run_id, output[-3000:]
        listing = flwr("ls", "tls-local", "--run-id", run_id.group(1), "--format", "json",
                       timeout=60)
        listed = re.search(r"\{.*\}", listing.stdout, re.S)
        assert listed, listing.stdout[-3000:]
        status = json.loads(listed.group(0))["runs"][0]
        assert status["status"] == "finished:completed", output[-3000:]
        assert "2 clients connected" in output
        # The SuperNode with an unregistered key never joined.
        rogue.wait(timeout=120)
        assert rogue.returncode != 0
        assert "Failed to activate SuperNode" in (tmp_path / "rogue.log").read_text()

        # A SuperNode killed mid-run: the run fails naming the lost client, and the
        # phase it was in leaves no summary (nothing half-written looks complete). The
        # rounds skip evaluation (each message costs a ClientApp process here) and the
        # node dies once the clients reported: round 1 waits reply-timeout seconds for it
        # (the SuperLink's missed heartbeats would take about a minute).
        failing = subprocess.Popen(
            [str(BIN / "flwr"), "run", app, "tls-local", "--stream", "--run-config",
             "scenario='mnist-iid' num-clients=2 num-server-rounds=400 evaluate-every=1000 "
             "reply-timeout=20 "
             f"samples-per-client=100 test-samples-per-client=50 "
             f"results-dir='{tmp_path / 'results-killed'}'"],
            env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        started.append(failing)
        watchdog = threading.Timer(600, lambda: os.killpg(failing.pid, signal.SIGKILL))
        watchdog.start()
        lines = []
        assert failing.stdout is not None
        try:
            for line in failing.stdout:
                lines.append(line)
                if "2 clients connected" in line:
                    os.killpg(nodes[1].pid, signal.SIGKILL)
            failing.wait(timeout=60)
        finally:
            watchdog.cancel()
        output = "".join(lines)
        assert "2 clients connected" in output, output[-3000:]
        assert "fedunl train round 1/400" not in output
        assert re.search(r"train round 1 failed \(1 of 2 replied\): no valid reply from "
                         r"partition 1 \(node \d+\)", output), output[-3000:]
        assert not list((tmp_path / "results-killed").rglob("summary.json"))
    finally:
        for process in started:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                    process.wait(timeout=10)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
