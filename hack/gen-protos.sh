#!/usr/bin/env bash
# Generate the kubelet device plugin (v1beta1) and PodResources (v1) gRPC stubs from
# workloads/cardeval_workloads/deviceapi/protos/ into the git-ignored
# workloads/cardeval_workloads/_generated/ package. Idempotent: a no-op (milliseconds)
# while the protos and the grpcio-tools version are unchanged.
#
#   hack/gen-protos.sh            # with $PYTHON, else the project venv, else python3
#   hack/gen-protos.sh --force
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv_python=${CARDEVAL_CACHE:-$HOME/.cache/cardeval}/venv/bin/python
if [ -n "${PYTHON:-}" ]; then py=$PYTHON
elif [ -x "$venv_python" ]; then py=$venv_python
else py=python3
fi
PYTHONPATH="$root/workloads${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m cardeval_workloads.protogen "$@"
