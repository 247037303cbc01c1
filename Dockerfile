# fedunl on a CUDA machine: the pinned stack, the app's code, Flower's processes.
# PyPI's Linux x86_64 wheels of torch 2.13.0 bundle their CUDA libraries; the host only
# needs the NVIDIA driver and the container toolkit (`docker run --gpus all`).
FROM python:3.11-slim

WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/app \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    FEDUNL_DATA_DIR=/data \
    FEDUNL_RESULTS_DIR=/results

COPY pyproject.toml README.md requirements.lock ./
# The lock's versions without its hashes and without its torch line: the lock pins the CPU
# build (torch==2.13.0+cpu); this image takes PyPI's CUDA build of the same release.
RUN python -c "import re; print('\n'.join(m for m in re.findall(r'^([A-Za-z0-9_.-]+==\S+)', open('requirements.lock').read(), re.M) if not m.startswith('torch==')))" > /tmp/pins.txt \
 && pip install "torch==2.13.0" -r /tmp/pins.txt

COPY fedunl_flwr ./fedunl_flwr
COPY strategies ./strategies
COPY clients ./clients
COPY experiments ./experiments
COPY scripts ./scripts

# Default: a SuperNode. Pass the transport yourself: --root-certificates /certs/ca.crt
# (TLS) or --insecure (a trusted network only), and e.g. --superlink HOST:8000
# --node-config "partition-id=0 data-file='/data/site0.npz'" (Flower 1.41 serves the
# Fleet API on the SuperLink's HTTP port, 8000 by default).
# For the server side run `flower-superlink` in this image and `flwr run . <connection>` from /app.
ENTRYPOINT ["flower-supernode"]
