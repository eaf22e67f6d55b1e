#!/usr/bin/env bash
# The test command: installs and starts everything the tests need, then runs them.
#
#   ./test.sh            all tests (unit, workloads on the CPU, real control plane)
#   ./test.sh -k judge   any pytest arguments
#
# On a cold machine this builds etcd, the Kubernetes control plane, kubectl and
# helm from source through the Go module proxy (cached in ~/.cache/cardeval/bin)
# and the Python environment (cached in ~/.cache/cardeval/venv).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$root"
venv=$("$root/hack/venv.sh")
export PATH="$venv/bin:$PATH"
# OpenMPI's mpirun, for the MPI bootstrap test of the collectives workload.
if ! command -v mpirun >/dev/null 2>&1; then
  echo "== installing OpenMPI (Debian openmpi-bin)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin; } >&2 \
    || echo "test.sh: could not install openmpi-bin; the mpirun test will fail and say why" >&2
fi
# etcd, Kubernetes, kubectl and helm from source (minutes when cold, instant when cached).
"$root/hack/build-binaries.sh" >/dev/null
echo "== lint (ruff)"
ruff check --no-cache .
echo "== types (mypy: strict for the API models, the engine and the envelope)"
mypy
echo "== architecture contracts (import-linter)"
lint-imports --no-cache
echo "== tests"
exec python -m pytest "$@"
