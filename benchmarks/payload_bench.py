"""One client sending ever larger tensors to an identity model, as qa/L0_perf_pyclients' simple_perf_client
does (INT32 [1, N], N = 100000 there: 400 KB each way): gpuserve against real Triton 2.51 (its Python
backend), the same tritonclient calls for both, HTTP with binary tensors and gRPC. A benchmark, not a test.

    .venv/bin/python benchmarks/payload_bench.py                       # N = 1k .. 1M, 2 rounds
    .venv/bin/python benchmarks/payload_bench.py --sizes 100000 --requests 300
    .venv/bin/python benchmarks/payload_bench.py --datatype BYTES --protocols json,http,grpc --sizes 1000,100000

Per point: p50 and p90 of one request's round trip (sequential, after 20 warm-up requests). Where the time
goes for mid-size bodies (64 KB - 1 MB) is copies: each joined or sliced copy of a body that size costs a
fresh allocation and its page faults, so the server's large-payload paths (views of the received bytes and
of the output arrays, server/grpc/large.py, server/binary.py, server/rest/http11.py) start at 64 KiB.
Needs the Triton peer venv (bash benchmarks/peers/setup.sh triton); servers start as stream_bench's do.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

import python_backend_bench as pbb  # noqa: E402
import python_backend_conformance as pbc  # noqa: E402

MODEL = "identity"
CONFIG = """name: "identity"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
"""
SOURCE = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(
            request, "INPUT0").as_numpy())]) for request in requests]
"""
# --model fresh: the model makes a new array per request (as most models do) rather than answering with its
# input, so the cost of copying a Python model's outputs when execute returns (gpuserve/ownership.py) shows
FRESH = SOURCE.replace(".as_numpy())", ".as_numpy() + 0)")


TYPES = {"INT32": "INT32", "BYTES": "STRING"}


def wire_bytes(datatype: str, size: int) -> int:
    if datatype == "BYTES":
        return sum(4 + len(item) for item in tensor_data(datatype, size).flat)
    return 4 * size


def start(kind: str, work: Path, source: str = SOURCE, datatype: str = "INT32"):
    return pbb.one_model_server(kind, work, MODEL, CONFIG.replace("TYPE_INT32", f"TYPE_{TYPES[datatype]}"), source)


def tensor_data(datatype: str, size: int):
    """INT32 [1, N], or BYTES [1, N] of short strings (the per-element costs dominate there)."""
    import numpy as np

    if datatype == "BYTES":
        return np.array([b"element %d" % i for i in range(size)], dtype=object).reshape(1, size)
    return np.arange(size, dtype=np.int32).reshape(1, size)


def point(server, protocol: str, size: int, requests: int, datatype: str = "INT32") -> dict:
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    x = tensor_data(datatype, size)
    if protocol == "grpc":
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
        tensor = grpcclient.InferInput("INPUT0", list(x.shape), datatype)
        tensor.set_data_from_numpy(x)
        outputs = [grpcclient.InferRequestedOutput("OUTPUT0")]
    else:  # http: binary tensors; json: the same HTTP route with the data in the JSON
        binary = protocol == "http"
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http}", network_timeout=300)
        tensor = httpclient.InferInput("INPUT0", list(x.shape), datatype)
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
    try:
        answer = client.infer(MODEL, [tensor], outputs=outputs).as_numpy("OUTPUT0")
        if datatype == "BYTES" and answer.size and isinstance(answer.flat[0], str):  # JSON data comes as text
            answer = np.vectorize(str.encode, otypes=[object])(answer)
        if not np.array_equal(answer, x):
            raise RuntimeError(f"{server.name} {protocol} {size}: the answer is not the request")
        for _ in range(20):
            client.infer(MODEL, [tensor], outputs=outputs)
        times = []
        for _ in range(requests):
            start_s = time.perf_counter()
            client.infer(MODEL, [tensor], outputs=outputs)
            times.append(time.perf_counter() - start_s)
    finally:
        client.close()
    times.sort()
    return {"p50_ms": 1000 * times[len(times) // 2], "p90_ms": 1000 * times[int(0.9 * (len(times) - 1))]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,16000,100000,200000,1000000", help="elements per request")
    parser.add_argument("--protocols", default="http,grpc", help="http (binary tensors), json (HTTP, JSON data), grpc")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", default="gpuserve,triton")
    parser.add_argument("--model", choices=("identity", "fresh"), default="identity")
    parser.add_argument("--datatype", choices=tuple(TYPES), default="INT32")
    parser.add_argument("--json", type=Path, default=pbb.RESULTS / "payload_bench.json")
    args = parser.parse_args()
    kinds, rows = args.servers.split(","), []
    with open(pbb.LOCK, "w") as lock, tempfile.TemporaryDirectory(prefix="payload-bench-") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for round_ in range(args.rounds):
            for kind in (kinds if round_ % 2 == 0 else kinds[::-1]):
                server = start(kind, Path(tmp), FRESH if args.model == "fresh" else SOURCE, args.datatype)
                try:
                    for size in (int(s) for s in args.sizes.split(",")):
                        for protocol in args.protocols.split(","):
                            row = {"round": round_ + 1, "server": kind, "model": args.model, "protocol": protocol,
                                   "datatype": args.datatype, "elements": size,
                                   "bytes": wire_bytes(args.datatype, size),
                                   **point(server, protocol, size, args.requests, args.datatype)}
                            rows.append(row)
                            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
                                  flush=True)
                finally:
                    pbc.stop(server)
                    pbc.clean_shm()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
