#!/usr/bin/env bash
# Run HERE (with network), once, before a GPU session that should check ONNX Runtime's CUDA provider:
# the lent image has only the CPU onnxruntime, and onnxruntime-gpu's wheel (~245 MiB) is far over the
# 64 MiB one device call carries. It is cut into parts .ortgpu/p1 .. .ortgpu/pN (each under 56 MiB, so
# the working tree fits beside it); parts carried in earlier calls stay on a warm machine (ignored paths
# there are kept between calls), and verify_all.sh joins them, checks the sha256 and installs the wheel
# in front of the image's CPU build. The image's CUDA 13 and cuDNN 9 wheels (torch's) serve its provider.
#   1. here:   bash benchmarks/gpu/fetch_wheels.sh && bash benchmarks/gpu/fetch_ort_gpu.sh
#   2. device: run(command="ls .ortgpu", carry=[".ortgpu/p1"]), then p2, p3, p4, one right after another
#              (a machine idle for 30 s is given back, and with it the parts)
#   3. device: run(command="bash benchmarks/gpu/verify_all.sh", carry=[".whl", ".ortgpu/p5"])
# verify_all.sh says in nvidia-smi.txt which parts it found; with any missing it runs on the CPU build.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=${ORT_GPU_VERSION:-1.31.1}  # built for CUDA 13 and cuDNN 9, as the image's torch 2.11+cu130
PART_MIB=${PART_MIB:-56}
grep -qx '/.ortgpu/' .git/info/exclude 2>/dev/null || echo '/.ortgpu/' >> .git/info/exclude
download=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$download" "onnxruntime-gpu==$VERSION"
wheel=$(ls "$download"/onnxruntime_gpu-*.whl)
rm -rf .ortgpu && mkdir -p .ortgpu/split
split -b "${PART_MIB}M" -d -a 1 "$wheel" .ortgpu/split/part
count=0
for piece in .ortgpu/split/part*; do
    count=$((count + 1))
    mkdir -p ".ortgpu/p$count" && mv "$piece" ".ortgpu/p$count/part"
done
rmdir .ortgpu/split
printf 'wheel %s\nsha256 %s\nparts %s\n' "$(basename "$wheel")" "$(sha256sum "$wheel" | cut -d' ' -f1)" "$count" \
    | tee ".ortgpu/p$count/MANIFEST"
rm -rf "$download"
du -sh .ortgpu/p*
echo "carry .ortgpu/p1 .. .ortgpu/p$((count - 1)) in calls of their own, then .ortgpu/p$count with .whl and verify_all.sh"
