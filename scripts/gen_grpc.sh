#!/usr/bin/env bash
# Regenerate the Python modules for server/grpc/inference.proto with grpcio-tools, then adjust them:
#   - the messages go into a private descriptor pool, so gpuserve and tritonclient (whose stubs
#     define the same `inference.*` names in the default pool) can be imported in one process;
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

"$python" - "$out" <<'PY'
import pathlib
import re
import sys

out = pathlib.Path(sys.argv[1])
header = "# Generated from inference.proto by scripts/gen_grpc.sh; edit the .proto and rerun, never this file.\n"


def replace(text, old, new, path, count=1):
    if text.count(old) != count:
        sys.exit(f"gen_grpc.sh: expected {count} x {old!r} in {path.name}; protoc output changed, update the script")
    return text.replace(old, new)


path = out / "inference_pb2.py"
text = path.read_text()
text, n = re.subn(r"from google\.protobuf import runtime_version as _runtime_version\n", "", text)
text, m = re.subn(r"_runtime_version\.ValidateProtobufRuntimeVersion\(.*?\n\)\n", "", text, flags=re.S)
if (n, m) not in ((0, 0), (1, 1)):
    sys.exit("gen_grpc.sh: unexpected runtime-version block in inference_pb2.py")
text = text.replace("# NO CHECKED-IN PROTOBUF GENCODE\n", "")
text = replace(text, "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(",
               "# A private pool: tritonclient registers the same `inference.*` names in the default one.\n"
               "POOL = _descriptor_pool.DescriptorPool()\n"
               "DESCRIPTOR = POOL.AddSerializedFile(", path)
text = replace(text, "_sym_db = _symbol_database.Default()\n", "", path)
text = replace(text, "from google.protobuf import symbol_database as _symbol_database\n", "", path)
path.write_text(header + text)

path = out / "inference_pb2_grpc.py"
text = path.read_text()
text = replace(text, "\nimport inference_pb2 as inference__pb2\n",
               "\nfrom . import inference_pb2 as inference__pb2\n", path)
path.write_text(header + text)
PY
echo "regenerated $out/inference_pb2.py and $out/inference_pb2_grpc.py"
