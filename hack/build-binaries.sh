#!/usr/bin/env bash
# Build the test control plane's binaries from source, into a cache outside the clone.
#
# Why from source: this machine reaches the Go module proxy but no release download
# site, and has no container engine. The wrapper modules under hack/ (k8s, etcd, helm)
# pin the versions; their go.mod/go.sum are committed so every build is reproducible.
#
# Layout: ${CARDEVAL_CACHE:-$HOME/.cache/cardeval}/bin/<component>-<version>/<binary>
#   kubernetes-v1.34.4/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl}
#   etcd-v3.6.16/etcd
#   helm-v3.19.5/helm
# The version comes from the wrapper module's go.mod, so bumping a pin builds anew.
#
# Idempotent: a binary that already exists is not rebuilt (a warm run takes well under
# a second). A binary is written to a temp name and renamed, so an interrupted build
# never leaves a half-written binary that later runs would trust.
#
# Output: progress on stderr; on stdout one line per binary, NAME=ABSOLUTE_PATH
# (the Python launcher parses these lines).
#
# Usage: hack/build-binaries.sh [component ...]   (components: kubernetes etcd helm; default all)
# Env:   CARDEVAL_CACHE, GOCACHE, GOMODCACHE (default: Go's usual ones),
#        CARDEVAL_BUILD_NICE (default 10; builds run under `nice`, the machine is shared).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${CARDEVAL_CACHE:-$HOME/.cache/cardeval}"
NICE="${CARDEVAL_BUILD_NICE:-10}"

if ! command -v go >/dev/null 2>&1; then
    echo "build-binaries: 'go' not found on PATH (need Go >= 1.24)" >&2
    exit 2
fi

# The module's version of a dependency, from the wrapper go.mod.
mod_version() { # module_dir module_path
    awk -v m="$2" '$1 == m && $2 ~ /^v/ {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$1/go.mod"
}

log() { echo "build-binaries: $*" >&2; }

# Serialise concurrent invocations (two pytest sessions, a human and CI...): one Go build
# at a time on a 2-core machine, and no two writers of the same cache dir.
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/bin/.build.lock"
if ! flock -n 9; then
    log "another build holds $CACHE/bin/.build.lock; waiting"
    flock 9
fi

build_one() { # module_dir out_dir binary_name package [ldflags...]
    local mod_dir="$1" out_dir="$2" name="$3" pkg="$4"; shift 4
    local out="$out_dir/$name"
    if [[ -x "$out" ]]; then
        return 0
    fi
    mkdir -p "$out_dir"
    local start=$SECONDS
    log "building $name ($pkg) -> $out"
    (
        cd "$mod_dir"
        # Default -mod=readonly: the committed go.sum is complete, and a build must never
        # rewrite go.mod/go.sum in the clone. CGO off, like the upstream release builds.
        CGO_ENABLED=0 nice -n "$NICE" \
            go build -trimpath -ldflags "-s -w $*" -o "$out.tmp.$$" "$pkg"
    )
    mv -f "$out.tmp.$$" "$out"
    log "built $name in $((SECONDS - start))s"
}

want() { # component
    [[ ${#COMPONENTS[@]} -eq 0 ]] && return 0
    local c
    for c in "${COMPONENTS[@]}"; do [[ "$c" == "$1" ]] && return 0; done
    return 1
}
COMPONENTS=("$@")

# --- Kubernetes ----------------------------------------------------------------------
K8S_VERSION="$(mod_version "$HACK_DIR/k8s" k8s.io/kubernetes)"
K8S_DIR="$CACHE/bin/kubernetes-$K8S_VERSION"
if want kubernetes; then
    # Stamp the version like the upstream build does (hack/lib/version.sh); otherwise the
    # binaries report v0.0.0-master, and clients that check the server version (helm's
    # kubeVersion constraints, kubectl's skew warning) misbehave.
    k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
    K8S_LDFLAGS=""
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        K8S_LDFLAGS+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor"
        K8S_LDFLAGS+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
        # shellcheck disable=SC2086
        build_one "$HACK_DIR/k8s" "$K8S_DIR" "$c" "k8s.io/kubernetes/cmd/$c" $K8S_LDFLAGS
    done
fi

# --- etcd ----------------------------------------------------------------------------
ETCD_VERSION="$(mod_version "$HACK_DIR/etcd" go.etcd.io/etcd/server/v3)"
ETCD_DIR="$CACHE/bin/etcd-$ETCD_VERSION"
if want etcd; then
    build_one "$HACK_DIR/etcd" "$ETCD_DIR" etcd go.etcd.io/etcd/server/v3
fi

# --- helm ----------------------------------------------------------------------------
HELM_VERSION="$(mod_version "$HACK_DIR/helm" helm.sh/helm/v3)"
HELM_DIR="$CACHE/bin/helm-$HELM_VERSION"
if want helm; then
    build_one "$HACK_DIR/helm" "$HELM_DIR" helm helm.sh/helm/v3/cmd/helm \
        -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean
fi

want kubernetes && for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do echo "$c=$K8S_DIR/$c"; done
want etcd && echo "etcd=$ETCD_DIR/etcd"
want helm && echo "helm=$HELM_DIR/helm"
exit 0
