#!/usr/bin/env bash
# Create the peer servers' virtual environments under .peers/ (gitignored), one per peer.
#   bash benchmarks/peers/setup.sh [triton|mlserver|kserve|torchserve|bench|all]   (default: all)
# Each venv is made with Debian's /usr/bin/python3.11 (pytriton's bundled tritonserver works only
# there; the others use it for uniformity). Re-running skips venvs already complete (.complete marker).
#   triton    nvidia-pytriton==0.7.0 (bundles tritonserver 2.51) + onnxruntime
#   mlserver  mlserver==1.7.1 + uvloop==0.21.0 (newer uvloop crashes it) + onnxruntime
#   kserve    kserve (latest) + onnxruntime
#   torchserve  torchserve==0.12.0 + torch-model-archiver==0.12.0 + torch==2.13.0 (the CPU wheel: checked
#             below, a CUDA build fails the step) + numpy, psutil; the server itself is Java (needs java 11+)
#   bench     matplotlib + tqdm for the plots and progress bars of the benchmark scripts
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PEERS="$ROOT/.peers"
PY="${PEER_PYTHON:-/usr/bin/python3.11}"
# The peers get the onnxruntime gpuserve runs (same kernels); PEER_ORT overrides.
GPUSERVE_ORT="$("$ROOT/.venv/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null || true)"
ORT="${PEER_ORT:-onnxruntime${GPUSERVE_ORT:+==$GPUSERVE_ORT}}"

if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
  echo "installing python3.11-venv with apt" >&2
  apt-get install -y python3.11-venv >&2
fi

make_venv() {  # name, pip packages...
  local name="$1"; shift
  local dir="$PEERS/$name"
  if [[ -f "$dir/.complete" ]]; then echo "$name: $dir ready"; return; fi
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/pip" install -q --upgrade pip
  "$dir/bin/pip" install -q "$@"
  touch "$dir/.complete"
  echo "$name: $dir ready"
}

want="${1:-all}"
case "$want" in
  triton|all) make_venv triton "nvidia-pytriton==0.7.0" "$ORT" numpy ;;&
  mlserver|all) make_venv mlserver "mlserver==1.7.1" "uvloop==0.21.0" "pandas<3" "$ORT" numpy ;;&
  kserve|all) make_venv kserve kserve "$ORT" numpy ;;&
  torchserve|all)
    if ! command -v java >/dev/null; then echo "torchserve: needs java 11+ (apt-get install -y openjdk-17-jre-headless)" >&2; fi
    make_venv torchserve "torchserve==0.12.0" "torch-model-archiver==0.12.0" "torch==2.13.0" numpy psutil \
      packaging pyyaml requests grpcio
    # torch must be the CPU wheel (no nvidia-* dependencies pulled in).
    if ! "$PEERS/torchserve/bin/python" -c 'import torch, sys; sys.exit(torch.version.cuda is not None)'; then
      echo "torchserve: torch in $PEERS/torchserve is a CUDA build; want the +cpu wheel" >&2
      rm -f "$PEERS/torchserve/.complete"; exit 1
    fi ;;&
  bench|all) make_venv bench matplotlib tqdm ;;&
  triton|mlserver|kserve|torchserve|bench|all) ;;
  *) echo "usage: $0 [triton|mlserver|kserve|torchserve|bench|all]" >&2; exit 2 ;;
esac
