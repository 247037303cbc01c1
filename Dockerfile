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

COPY pyproject.toml README.md ./
RUN pip install "torch==2.13.0" "torchvision==0.28.0" \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

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
