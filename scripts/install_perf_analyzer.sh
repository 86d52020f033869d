#!/usr/bin/env bash
# Puts Triton's perf_analyzer (the C++ load generator Triton users profile with) at .venv/bin/perf_analyzer.
#   bash scripts/install_perf_analyzer.sh [VENV]      (default: .venv of this checkout)
# PyPI's `perf-analyzer` here is a 0.1.0 placeholder without the binary, but tritonclient's Linux wheels up to
# 2.48 ship it (tritonclient-2.48.0.data/data/bin/perf_analyzer, 20 MB). It links libb64 (Debian: libb64-0d)
# and libcudart.so.12 (PyPI: nvidia-cuda-runtime-cu12, 0.7 MB of library), loaded even where no GPU is: the
# wrapper written to VENV/bin points the loader at that library. Nothing else of the old tritonclient is kept
# (the venv's own tritonclient stays as it is). Exit 0 with the binary working, non-zero with the reason.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "${1:-$root/.venv}" && pwd) || exit 1
version=2.48.0
dest="$venv/lib/perf_analyzer"
if [ -x "$venv/bin/perf_analyzer" ] && "$venv/bin/perf_analyzer" --version >/dev/null 2>&1; then
    exit 0
fi
if ! ldconfig -p | grep -q "libb64.so.0d"; then
    { apt-get install -y -q libb64-0d >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 &&
        apt-get install -y -q libb64-0d >/dev/null 2>&1; }; } || { echo "perf_analyzer: libb64-0d did not install" >&2; exit 1; }
fi
"$venv/bin/python" -m pip install -q "nvidia-cuda-runtime-cu12>=12,<13" 2>&1 | grep -v "^WARNING: Location" || true
cudart=$("$venv/bin/python" -c "import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], 'lib'))") || {
    echo "perf_analyzer: nvidia-cuda-runtime-cu12 did not install" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 -d "$tmp" \
    "tritonclient==$version" 2>&1 | grep -v "^WARNING: Location" || true
wheel=$(ls "$tmp"/tritonclient-"$version"-*.whl 2>/dev/null | head -1)
[ -n "$wheel" ] || { echo "perf_analyzer: tritonclient $version's wheel did not download" >&2; exit 1; }
mkdir -p "$dest"
"$venv/bin/python" - "$wheel" "$dest/perf_analyzer" "$version" <<'EOF' || exit 1
import shutil, sys, zipfile
wheel, target, version = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive, archive.open(f"tritonclient-{version}.data/data/bin/perf_analyzer") as src, \
        open(target, "wb") as out:
    shutil.copyfileobj(src, out)
EOF
chmod +x "$dest/perf_analyzer"
cat > "$venv/bin/perf_analyzer" <<EOF
#!/bin/sh
# Written by scripts/install_perf_analyzer.sh: perf_analyzer $version from tritonclient's wheel, with its libcudart
LD_LIBRARY_PATH="$cudart\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dest/perf_analyzer" "\$@"
EOF
chmod +x "$venv/bin/perf_analyzer"
"$venv/bin/perf_analyzer" --version >/dev/null 2>&1 || { echo "perf_analyzer: installed but does not start" >&2; exit 1; }
