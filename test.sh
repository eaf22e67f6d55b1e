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
echo "== architecture contracts (import-linter)"
lint-imports --no-cache
echo "== tests"
exec python -m pytest "$@"
