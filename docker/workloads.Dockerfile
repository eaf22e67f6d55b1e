# syntax=docker/dockerfile:1
# The workload image: torch + the workload package (`python -m cardeval_workloads ...`). No kopf.
#   docker build -f docker/workloads.Dockerfile -t ghcr.io/cardeval/workloads:0.1.0 .
# CPU-only torch (much smaller), for clusters whose cards use a vendor build of torch set in a derived image:
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE}
ARG TORCH_VERSION=2.15.0
ARG TORCH_INDEX=
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
# g++: custom-op builds a C++ extension on CPU nodes, and Triton compiles its launcher with a C compiler.
# openmpi-bin + openssh: the MPIJob launcher/worker path of the multi-node workloads.
RUN apt-get update && apt-get install -y --no-install-recommends g++ openmpi-bin openssh-server openssh-client \
 && rm -rf /var/lib/apt/lists/*
RUN pip install ${TORCH_INDEX:+--index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple} \
      "torch==${TORCH_VERSION}" "numpy==2.4.6" "nvidia-ml-py==13.615.71" "pydantic==2.14.4" \
      "grpcio==1.85.3" "protobuf==6.33.6" "ninja==1.13.2" "scikit-learn==1.9.1" \
      "onnx==1.23.2" "onnxruntime-gpu==1.31.1" "mlserver==1.7.1" "tritonclient[http,grpc]==2.73.0" \
      "requests==2.34.2" "PyYAML==6.0.4"
WORKDIR /opt/cardeval
COPY workloads/cardeval_workloads/ /opt/cardeval/cardeval_workloads/
ENV PYTHONPATH=/opt/cardeval
# The device-plugin probe's gRPC stubs are generated at build time, not committed.
# grpcio-tools of the protobuf-6 line: MLServer and tritonclient need protobuf < 7 (README, "One environment").
RUN pip install "grpcio-tools==1.81.1" && python -m cardeval_workloads.protogen && pip uninstall -y grpcio-tools
# The workload package must not need the engine or the operator (an import-linter contract); check it loads.
RUN python -m compileall -q /opt/cardeval && python -c "import cardeval_workloads.envelope" \
 && (python -c "import kopf" 2>/dev/null && exit 1 || true)
RUN groupadd --gid 65532 cardeval && useradd --uid 65532 --gid 65532 --create-home --home-dir /home/cardeval \
      --shell /usr/sbin/nologin cardeval
USER 65532:65532
# The Job sets the command: python -m cardeval_workloads <workload> --profile ... --device auto --devices all
CMD ["python", "-m", "cardeval_workloads", "--help"]
