#!/usr/bin/env bash
# Make sure the project's virtual environment exists and is current, then print its path.
#
# The venv lives outside the clone (torch alone is a few GB) and is keyed by
# the hash of pyproject.toml: a warm machine reuses it, a changed dependency
# list reinstalls into it, a cold machine builds it from PyPI.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${CARDEVAL_CACHE:-$HOME/.cache/cardeval}
venv=$cache/venv
python=${PYTHON:-python3}
mkdir -p "$cache"
stamp_want=$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)-$(cd "$root" && pwd | sha256sum | cut -c1-8)
stamp_file=$venv/.cardeval-stamp
if [ ! -x "$venv/bin/python" ]; then
  echo "cardeval: creating the virtual environment in $venv" >&2
  "$python" -m venv "$venv" >&2
fi
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp_want" ]; then
  echo "cardeval: installing Python packages into $venv (the first time downloads torch: a few GB)" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet -e "$root[operator,workloads,report,test]" >&2
  echo "$stamp_want" > "$stamp_file"
fi
# The device-plugin and PodResources gRPC stubs are generated, not committed.
PYTHON="$venv/bin/python" "$root/hack/gen-protos.sh" >&2
echo "$venv"
