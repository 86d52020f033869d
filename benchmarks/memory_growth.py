"""Does the server's memory grow with the requests it answers? (Triton's qa L0_memory_growth asks it of
tritonserver with massif; here the resident set of `gpuserve start` and its children is read from /proc.)

Rounds of the same mixed traffic go to one server: V2 JSON and binary over HTTP, gRPC unary, a decoupled
Python model over a gRPC stream, an ensemble whose decoupled step's responses each run the next step, system
shared memory, and refused requests (wrong shape, unknown model).
After a warm-up round the resident set is sampled after every round; a server that keeps nothing per
request levels off, so the figure reported is the growth per 10k requests over the second half of the
rounds (the first half still fills caches and pools), for the main process and the Python-backend stubs.

    .venv/bin/python benchmarks/memory_growth.py --rounds 8 --requests 4000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import queue
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

DECOUPLED = textwrap.dedent("""
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            for request in requests:
                n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy().ravel()[0])
                sender = request.get_response_sender()
                for i in range(n):
                    sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.full([1], i, np.int32))]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return None
    """)
DECOUPLED_CONFIG = """backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""


PLUS_ONE = textwrap.dedent("""
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor(
                "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy() + 1)]) for r in requests]
    """)
PLUS_ONE_CONFIG = """backend: "python"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""
# the decoupled model's responses each run the next step (gpuserve/ensemble_stream.py: a task per response)
FAN_CONFIG = """platform: "ensemble"
max_batch_size: 0
input [ { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ 1 ] } ]
ensemble_scheduling { step [
  { model_name: "stream" model_version: -1 input_map { key: "N" value: "N" } output_map { key: "OUT" value: "T" } },
  { model_name: "plus_one" model_version: -1 input_map { key: "X" value: "T" } output_map { key: "Y" value: "Y" } }
] }
"""


def build_repository(root: Path) -> harness.ModelSpec:
    spec = harness.SMALL
    paths = harness.build_models(root / "_built", rebuild=False)
    (root / "small" / "1").mkdir(parents=True, exist_ok=True)
    (root / "small" / "1" / "model.onnx").write_bytes(paths["small"].read_bytes())
    (root / "small" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 64\n'
                                                 "dynamic_batching { }\n")
    (root / "stream" / "1").mkdir(parents=True, exist_ok=True)
    (root / "stream" / "1" / "model.py").write_text(DECOUPLED)
    (root / "stream" / "config.pbtxt").write_text(DECOUPLED_CONFIG)
    (root / "plus_one" / "1").mkdir(parents=True, exist_ok=True)
    (root / "plus_one" / "1" / "model.py").write_text(PLUS_ONE)
    (root / "plus_one" / "config.pbtxt").write_text(PLUS_ONE_CONFIG)
    (root / "fan" / "1").mkdir(parents=True, exist_ok=True)
    (root / "fan" / "config.pbtxt").write_text(FAN_CONFIG)
    return spec


def rss_kib(pids) -> dict:
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                out[pid] = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return out


class Traffic:
    """One round: `requests` calls spread over the kinds below, from `threads` client threads."""

    def __init__(self, http_port: int, grpc_port: int, spec: harness.ModelSpec, threads: int):
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.http, self.grpc = httpclient, grpcclient
        self.http_url, self.grpc_url = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
        self.spec, self.threads = spec, threads
        self.x = np.random.default_rng(0).standard_normal((1, spec.in_features)).astype(np.float32)
        self.kinds = [self.http_json, self.http_binary, self.grpc_unary, self.grpc_stream, self.ensemble_stream,
                      self.shm, self.refused]

    def _inputs(self, module, binary=True):
        tensor = module.InferInput(self.spec.input_name, list(self.x.shape), "FP32")
        if module is self.http:
            tensor.set_data_from_numpy(self.x, binary_data=binary)
        else:
            tensor.set_data_from_numpy(self.x)
        return [tensor]

    def http_json(self, client):
        client["http"].infer("small", self._inputs(self.http, binary=False))

    def http_binary(self, client):
        client["http"].infer("small", self._inputs(self.http))

    def grpc_unary(self, client):
        client["grpc"].infer("small", self._inputs(self.grpc))

    def grpc_stream(self, client, model="stream"):
        answers = queue.Queue()
        grpc = client["grpc"]
        grpc.start_stream(callback=lambda result, error: answers.put((result, error)))
        n = self.grpc.InferInput("N", [1], "INT32")
        n.set_data_from_numpy(np.array([4], np.int32))
        grpc.async_stream_infer(model, [n])
        for _ in range(4):
            result, error = answers.get(timeout=30)
            if error is not None:
                raise RuntimeError(str(error))
        grpc.stop_stream()

    def ensemble_stream(self, client):
        self.grpc_stream(client, "fan")

    def shm(self, client):
        import tritonclient.utils.shared_memory as shm

        name = f"/mg_{id(client)}"
        size = self.x.nbytes
        handle = shm.create_shared_memory_region(name[1:], name, size)
        try:
            shm.set_shared_memory_region(handle, [self.x])
            client["http"].register_system_shared_memory(name[1:], name, size)
            tensor = self.http.InferInput(self.spec.input_name, list(self.x.shape), "FP32")
            tensor.set_shared_memory(name[1:], size)
            client["http"].infer("small", [tensor])
            client["http"].unregister_system_shared_memory(name[1:])
        finally:
            shm.destroy_shared_memory_region(handle)

    def refused(self, client):
        from tritonclient.utils import InferenceServerException

        bad = self.http.InferInput(self.spec.input_name, [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32), binary_data=False)
        for model in ("small", "no_such_model"):
            try:
                client["http"].infer(model, [bad])
            except InferenceServerException:
                pass
            else:
                raise RuntimeError(f"{model} took a [1, 3] input")

    def round(self, requests: int) -> float:
        per_thread = max(requests // self.threads, 1)

        def work(seed):
            client = {"http": self.http.InferenceServerClient(self.http_url),
                      "grpc": self.grpc.InferenceServerClient(self.grpc_url)}
            try:
                for i in range(per_thread):
                    self.kinds[(seed + i) % len(self.kinds)](client)
            finally:
                client["http"].close()
                client["grpc"].close()

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(work, range(self.threads)))
        return time.perf_counter() - start


def growth_per_10k(samples, per_round: int) -> float:
    """Least-squares slope of the second half of the samples, in KiB per 10k requests."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return 0.0
    xs = np.arange(len(half), dtype=float) * per_round
    slope = np.polyfit(xs, np.asarray(half, float), 1)[0]
    return float(slope * 10_000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4000, help="requests per round (all kinds together)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--port", type=int, default=8870, help="HTTP port; gRPC and metrics take the next two")
    parser.add_argument("--json", type=Path, help="write the samples here too")
    args = parser.parse_args()

    root = harness.RESULTS / "memory_growth_repo"
    spec = build_repository(root)
    cmd = [harness.gpuserve_bin(), "start", str(root), "--http-port", str(args.port), "--grpc-port",
           str(args.port + 1), "--metrics-port", str(args.port + 2)]
    server = harness.ServerProcess("gpuserve", cmd, harness.RESULTS / "memory_growth.log").start()
    try:
        server.wait_ready([f"http://127.0.0.1:{args.port}/v2/models/{m}/ready" for m in ("small", "stream", "fan")])
        traffic = Traffic(args.port, args.port + 1, spec, args.threads)
        traffic.round(args.requests)  # warm-up: pools, caches, stub processes
        main_pid = server.proc.pid
        rows = []
        for index in range(args.rounds):
            seconds = traffic.round(args.requests)
            pids = harness.tree_pids(main_pid)
            sizes = rss_kib(pids)
            rows.append({"round": index + 1, "seconds": round(seconds, 2), "main_kib": sizes.get(main_pid, 0),
                         "children_kib": sum(v for p, v in sizes.items() if p != main_pid)})
            print(json.dumps(rows[-1]), flush=True)
        main_growth = growth_per_10k([r["main_kib"] for r in rows], args.requests)
        child_growth = growth_per_10k([r["children_kib"] for r in rows], args.requests)
        summary = {"requests_per_round": args.requests, "rounds": args.rounds, "threads": args.threads,
                   "main_growth_kib_per_10k": round(main_growth, 1),
                   "children_growth_kib_per_10k": round(child_growth, 1), "machine": harness.machine()}
        print(json.dumps(summary), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"summary": summary, "rounds": rows}, indent=1))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
