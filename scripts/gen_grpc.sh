#!/usr/bin/env bash
# Regenerate the Python modules for server/grpc/inference.proto (Triton's and KServe's V2 service) and
# server/grpc/tfserving.proto and torchserve.proto (TensorFlow Serving's and TorchServe's APIs; messages only,
# their handlers are bound in server/grpc/tfserving.py and torchserve.py) with grpcio-tools, then adjust them:
#   - the messages go into a private descriptor pool, so gpuserve and tritonclient or tensorflow-serving-api
#     (whose stubs define the same `inference.*` / `tensorflow.serving.*` names in the default pool) can be
#     imported in one process;
#   - the gencode-vs-runtime version check is dropped: the code uses only the descriptor builder
#     API present since protobuf 4.21, so it runs on the `protobuf>=4.25` that gpuserve[grpc] allows;
#   - the service module imports the message module package-relatively.
# Usage: scripts/gen_grpc.sh   (from anywhere; uses .venv/bin/python when present, else $PYTHON or python3)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/server/grpc"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi

"$python" -m grpc_tools.protoc -I "$out" --python_out="$out" --grpc_python_out="$out" "$out/inference.proto"
"$python" -m grpc_tools.protoc -I "$out" --python_out="$out" "$out/tfserving.proto" "$out/torchserve.proto"

"$python" - "$out" <<'PY'
import pathlib
import re
import sys

out = pathlib.Path(sys.argv[1])


def header(proto):
    return f"# Generated from {proto} by scripts/gen_grpc.sh; edit the .proto and rerun, never this file.\n"


def replace(text, old, new, path, count=1):
    if text.count(old) != count:
        sys.exit(f"gen_grpc.sh: expected {count} x {old!r} in {path.name}; protoc output changed, update the script")
    return text.replace(old, new)


def private_pool(name, names):
    path = out / f"{name}_pb2.py"
    text = path.read_text()
    text, n = re.subn(r"from google\.protobuf import runtime_version as _runtime_version\n", "", text)
    text, m = re.subn(r"_runtime_version\.ValidateProtobufRuntimeVersion\(.*?\n\)\n", "", text, flags=re.S)
    if (n, m) not in ((0, 0), (1, 1)):
        sys.exit(f"gen_grpc.sh: unexpected runtime-version block in {path.name}")
    text = text.replace("# NO CHECKED-IN PROTOBUF GENCODE\n", "")
    text = replace(text, "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(",
                   f"# A private pool: {names} registers the same names in the default one.\n"
                   "POOL = _descriptor_pool.DescriptorPool()\n"
                   "DESCRIPTOR = POOL.AddSerializedFile(", path)
    text = replace(text, "_sym_db = _symbol_database.Default()\n", "", path)
    text = replace(text, "from google.protobuf import symbol_database as _symbol_database\n", "", path)
    path.write_text(header(f"{name}.proto") + text)


private_pool("inference", "tritonclient")
private_pool("tfserving", "tensorflow-serving-api")
private_pool("torchserve", "a TorchServe client's stubs")

path = out / "inference_pb2_grpc.py"
text = path.read_text()
text = replace(text, "\nimport inference_pb2 as inference__pb2\n",
               "\nfrom . import inference_pb2 as inference__pb2\n", path)
path.write_text(header("inference.proto") + text)
PY
echo "regenerated $out/inference_pb2.py, inference_pb2_grpc.py, tfserving_pb2.py and torchserve_pb2.py"
