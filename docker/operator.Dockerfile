# syntax=docker/dockerfile:1
# The operator image: kopf + the Kubernetes client + the engine. No torch.
#   docker build -f docker/operator.Dockerfile -t ghcr.io/cardeval/operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY workloads/ workloads/
# The project wheel holds the engine and the workload package's torch-free modules (the envelope);
# the operator extras are pinned to what the tests ran with.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels \
      "pydantic==2.14.4" "pyyaml==6.0.4" "junitparser==5.0.3" "kopf==1.45.2" "kubernetes==37.0.2" \
      "prometheus-client==0.26.0"

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels cardeval kopf kubernetes prometheus-client \
 && python -c "import cardeval.operator.handlers" \
 && (python -c "import torch" 2>/dev/null && exit 1 || true)
# A fixed non-root UID (the chart sets runAsNonRoot and runAsUser 65532).
RUN groupadd --gid 65532 cardeval && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin cardeval
USER 65532:65532
EXPOSE 8000 8080
ENTRYPOINT ["python", "-m", "cardeval.operator"]
