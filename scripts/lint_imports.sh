#!/usr/bin/env bash
# Checks the import contracts in pyproject.toml. import-linter reads packages from disk, and our
# four code folders map into `gpuserve` only when installed, so lint a plain (non-editable) build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip install -q --no-deps --target "$tmp/site" "$root" 2>&1 | grep -v "^WARNING: Location" || true
cd "$tmp"
PYTHONPATH="$tmp/site" "$(dirname "$python")/lint-imports" "$root/pyproject.toml"
