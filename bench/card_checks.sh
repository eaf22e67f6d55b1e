#!/usr/bin/env bash
# One prepared pass over a card, for a short lease of a GPU machine (one NVIDIA H200, 16 cores).
#
#   bash bench/card_checks.sh [OUTPUT_DIR]        # default: $OUT
#
# Runs, each under its own time limit and all together within CARD_CHECKS_BUDGET_S (default 450 s,
# so the whole script ends inside 8 minutes even when a step hangs):
#   * every workload of the registry whose TOPOLOGY is "card" (node and multi-node workloads need
#     several cards, a kubelet or several nodes), as the operator runs a card Job:
#       python -m cardeval_workloads <w> --profile quick --device accelerator --devices all
#     so a machine whose process sees no card fails in seconds, with the reason, instead of
#     measuring its CPU;
#   * bench/gpu_matmul_sweep.py (goal: our peak.bf16 >= 0.97 of an independent cuBLAS shape sweep)
#     and bench/gpu_copy_sweep.py (goal: our memory.d2d_gbps >= 0.95 of a plain copy loop's best),
#     with grids trimmed to fit the budget.
#
# Files in OUTPUT_DIR (few on purpose: a lease returns at most 8): summary.txt (one line per step,
# also printed), envelopes.jsonl (each workload's envelope line, after "<workload> "), bench.txt
# (the benchmarks' output), stderr.log (every step's stderr, last 400 lines each).
# Exit 0 when every step ran, exited 0 and (for workloads) reported status "ok"; else 1.
# Worst case: the budget, plus 10 s for the last step to die after its TERM (timeout -k 10).
#
# Knobs (environment):
#   CARD_CHECKS_DEVICE=cpu   dry run on a machine without a card (--device cpu; the benchmarks
#                            print "no GPU: skipped")
#   CARD_CHECKS_ONLY=a,b     run only these steps (workload names, gpu_matmul_sweep, gpu_copy_sweep)
#   CARD_CHECKS_BUDGET_S=N   total seconds for all steps (default 450)
#   CARD_CHECKS_PLAN=1       print the steps and their limits, run nothing
#   PYTHON=...               the interpreter (default python3, the one holding torch on the H200)
# Wheels in <repo>/.whl (e.g. pydantic and its needs, which the H200 image lacks) are installed
# into a scratch folder first, as the device machine's README describes.

set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-${OUT:-}}"
if [ -z "$DEST" ]; then
    echo "usage: $0 OUTPUT_DIR (or set OUT)" >&2
    exit 2
fi
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
DEVICE="${CARD_CHECKS_DEVICE:-accelerator}"
BUDGET_S="${CARD_CHECKS_BUDGET_S:-450}"
ONLY=",${CARD_CHECKS_ONLY:-},"
PY="${PYTHON:-python3}"
MIN_STEP_S=5
START=$(date +%s)
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT/workloads:$ROOT/operator${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT" || exit 2

# Per-step limits in seconds (quick profile on an H200, start-up of torch and CUDA included).
declare -A LIMIT=([info]=45 [compute]=120 [transfer]=75 [memory]=75 [custom-op]=90 [op-coverage]=75
                  [fault]=75 [power-limit]=60 [power-load]=75 [profiler]=60 [stress]=75
                  [gpu_matmul_sweep]=120 [gpu_copy_sweep]=75)
DEFAULT_LIMIT=60
# What runs first when the budget is short: the figures the engine judges most.
FIRST=(info compute transfer memory gpu_matmul_sweep gpu_copy_sweep)
FAILED=0

: >"$DEST/summary.txt"
: >"$DEST/envelopes.jsonl"
: >"$DEST/bench.txt"
: >"$DEST/stderr.log"

summary() {
    echo "$*" | tee -a "$DEST/summary.txt"
}

selected() {
    [ "$ONLY" = ",," ] || [[ "$ONLY" == *",$1,"* ]]
}

install_wheels() {
    # Packages the device image lacks travel as wheels; installed where nothing else looks.
    compgen -G "$ROOT/.whl/*.whl" >/dev/null || return 0
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SCRATCH/site" "$ROOT"/.whl/*.whl || return 1
    export PYTHONPATH="$SCRATCH/site:$PYTHONPATH"
}

preflight() {
    local why
    if ! install_wheels; then
        summary "preflight FAIL: the wheels in .whl did not install"
        return 1
    fi
    if ! why=$(timeout 120 "$PY" -c "import torch, pydantic, cardeval_workloads.envelope" 2>&1); then
        summary "preflight FAIL: $PY cannot import the workloads' needs: $(echo "$why" | tail -n 1)" \
            "(carry the missing wheels in .whl, see /work/.library/device/README.md)"
        return 1
    fi
}

card_workloads() {
    # Every workload of the registry with TOPOLOGY "card", in registry order.
    timeout 120 "$PY" - <<'EOF'
from cardeval_workloads.harness import registry
for name in registry.available():
    if getattr(registry.load(name), "TOPOLOGY", "") == "card":
        print(name)
EOF
}

envelope_summary() {
    # One line from a workload's stdout: status, checks, a few headline figures, the first error.
    timeout 60 "$PY" - "$1" "$2" <<'EOF'
import sys
from cardeval_workloads.envelope import find_envelope_in_output

HEADLINE = {"compute": ("peak.fp32", "peak.bf16", "peak.fp16", "peak.int8", "peak.fp8"),
            "memory": ("memory.d2d_gbps", "memory.bandwidth_gbps"),
            "transfer": ("transfer.h2d_gbps", "transfer.d2h_gbps", "transfer.mean_gbps")}
try:
    env = find_envelope_in_output(open(sys.argv[1], encoding="utf-8").read())
except Exception as exc:  # noqa: BLE001 - no envelope is itself the finding
    print(f"status=none (no envelope: {type(exc).__name__}: {str(exc)[:160]})")
    sys.exit(0)
oks = [c.ok for c in env.checks]
failed = sorted({c.name for c in env.checks if c.ok is False})
figures = []
for name in HEADLINE.get(sys.argv[2], ()):
    for m in env.metrics_named(name):
        if m.labels.get("detail") != "true":
            figures.append(f"{name}[{m.device}]={m.value:.4g} {m.unit}" if m.value is not None
                           else f"{name}[{m.device}]=n/a")
line = (f"status={env.status} backend={env.backend or '-'} devices={len(env.devices)} "
        f"checks ok={oks.count(True)} failed={oks.count(False)} undecided={oks.count(None)}")
if failed:
    line += " failed_checks=" + ",".join(failed)[:200]
if figures:
    line += " | " + "; ".join(figures)
if env.errors:
    line += " | error: " + env.errors[0][:240]
print(line)
EOF
}

run_step() {
    # run_step NAME KIND COMMAND...: time-limited, outputs collected, one summary line.
    local name=$1 kind=$2
    shift 2
    local limit=${LIMIT[$name]:-$DEFAULT_LIMIT}
    local left=$((START + BUDGET_S - $(date +%s)))
    if ((left < MIN_STEP_S)); then
        summary "$name SKIPPED: out of time (${BUDGET_S}s budget spent)"
        FAILED=1
        return
    fi
    ((limit > left)) && limit=$left
    local t0=$SECONDS rc
    timeout -k 10 "$limit" "$@" >"$SCRATCH/out" 2>"$SCRATCH/err"
    rc=$?
    local took=$((SECONDS - t0)) note=""
    ((rc == 124 || rc == 137)) && note=" TIMEOUT after ${limit}s"
    { echo "===== $name (rc=$rc, ${took}s): $*"; tail -n 400 "$SCRATCH/err"; } >>"$DEST/stderr.log"
    if [ "$kind" = workload ]; then
        grep -m1 '^::cardeval-envelope::' "$SCRATCH/out" | sed "s/^/$name /" >>"$DEST/envelopes.jsonl"
        local line
        line=$(envelope_summary "$SCRATCH/out" "$name")
        summary "$name rc=$rc ${took}s$note $line"
        [[ $rc -eq 0 && "$line" == status=ok* ]] || FAILED=1
    else
        { echo "===== $name (rc=$rc, ${took}s): $*"; cat "$SCRATCH/out"; } >>"$DEST/bench.txt"
        local ratio
        ratio=$(grep -E 'ratio|skipped' "$SCRATCH/out" | tail -n 1)
        summary "$name rc=$rc ${took}s$note ${ratio:-(no ratio printed; see bench.txt)}"
        ((rc == 0)) || FAILED=1
    fi
}

plan() {
    # The steps in order, one per line: NAME KIND COMMAND...
    local w
    local -a all
    mapfile -t all < <(card_workloads)
    if ((${#all[@]} == 0)); then
        echo "ERROR registry - no card workload found (is the package importable?)"
        return
    fi
    local -a order=()
    for w in "${FIRST[@]}"; do
        if [[ " ${all[*]} " == *" $w "* || $w == gpu_* ]]; then order+=("$w"); fi
    done
    for w in "${all[@]}"; do
        [[ " ${order[*]} " == *" $w "* ]] || order+=("$w")
    done
    for w in "${order[@]}"; do
        selected "$w" || continue
        case $w in
            gpu_matmul_sweep)
                echo "$w bench $PY bench/gpu_matmul_sweep.py --profile standard --dims 4096,8192,16384 --min-s 0.05" ;;
            gpu_copy_sweep)
                echo "$w bench $PY bench/gpu_copy_sweep.py --profile standard --min-s 0.05" ;;
            *)
                echo "$w workload $PY -m cardeval_workloads $w --profile quick --device $DEVICE --devices all" ;;
        esac
    done
}

if [ -n "${CARD_CHECKS_PLAN:-}" ]; then
    while read -r name kind cmd; do
        echo "$name limit=${LIMIT[$name]:-$DEFAULT_LIMIT}s $kind: $cmd"
    done < <(plan)
    exit 0
fi

summary "card_checks: device=$DEVICE budget=${BUDGET_S}s python=$PY host=$(hostname) $(date -u +%FT%TZ)"
preflight || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit \
    --format=csv,noheader 2>&1 | sed 's/^/gpu: /' | tee -a "$DEST/summary.txt"
mapfile -t STEPS < <(plan)
for step in "${STEPS[@]}"; do
    read -r -a words <<<"$step"
    if [ "${words[0]}" = ERROR ]; then
        summary "${step#ERROR }"
        FAILED=1
        continue
    fi
    run_step "${words[@]}"
done
VERDICT="all steps ok"
[ "$FAILED" = 0 ] || VERDICT="some steps FAILED or were skipped"
summary "card_checks: done in $(($(date +%s) - START))s, $VERDICT"
exit $FAILED
