#!/usr/bin/env bash
# The Kubeflow MPI Operator's MPIJob CRD (kubeflow.org/v2beta1), taken from its Go module.
#
# Why from the Go module: this machine reaches the Go module proxy but no release
# download site. The module's zip holds the operator's manifests, among them the CRD
# the MPI Operator installs (manifests/base/kubeflow.org_mpijobs.yaml). The tests apply
# it server-side to the test API server, so that the API server's schema validation
# judges the MPIJob the operator builds (operator/cardeval/operator/multinode_launch.py).
#
# Output: the absolute path of the CRD file on stdout (progress on stderr).
# Cache:  ${CARDEVAL_CACHE:-$HOME/.cache/cardeval}/crds/mpi-operator-<version>/kubeflow.org_mpijobs.yaml
#         (a warm run takes well under a second and needs no network).
# Env:    MPI_OPERATOR_VERSION (default v0.6.0), CARDEVAL_CACHE, GOMODCACHE.
set -euo pipefail

VERSION="${MPI_OPERATOR_VERSION:-v0.6.0}"
MODULE=github.com/kubeflow/mpi-operator
CACHE="${CARDEVAL_CACHE:-$HOME/.cache/cardeval}"
DEST_DIR="$CACHE/crds/mpi-operator-$VERSION"
DEST="$DEST_DIR/kubeflow.org_mpijobs.yaml"
SOURCE=manifests/base/kubeflow.org_mpijobs.yaml

if [ -s "$DEST" ]; then
    echo "$DEST"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "mpi-operator-crd: 'go' not found on PATH (needed once, to download $MODULE@$VERSION)" >&2
    exit 2
fi
echo "mpi-operator-crd: downloading $MODULE@$VERSION through the Go module proxy" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Outside any module: `go mod download` of an explicit version needs no go.mod.
json=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$MODULE@$VERSION")
dir=$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' | head -n 1)
if [ -z "$dir" ] || [ ! -f "$dir/$SOURCE" ]; then
    echo "mpi-operator-crd: $MODULE@$VERSION has no $SOURCE (download said: $json)" >&2
    exit 1
fi
mkdir -p "$DEST_DIR"
cp "$dir/$SOURCE" "$DEST.tmp.$$"
chmod 0644 "$DEST.tmp.$$"
mv -f "$DEST.tmp.$$" "$DEST"
echo "mpi-operator-crd: $DEST" >&2
echo "$DEST"
