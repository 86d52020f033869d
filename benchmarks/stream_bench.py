"""Token streaming, as LLM serving uses it: a decoupled Triton Python-backend model answering each request
with N responses over a gRPC stream, on gpuserve and on real Triton 2.51 (its Python backend), the same
client for both. A benchmark, not a test.

    .venv/bin/python benchmarks/stream_bench.py                  # c = 1, 8, 32; 32 tokens; 2 rounds
    .venv/bin/python benchmarks/stream_bench.py --quick          # one round, short points
    .venv/bin/python benchmarks/stream_bench.py --concurrency 32 --rate 300 --trace-rate 20

The model (`gen`, one instance, decoupled) sends N responses of one INT32 each from a thread, then the final
flag alone, as TensorRT-LLM's and vLLM's Python models do. Each of C clients holds one gRPC stream
(tritonclient.grpc.aio, one process, one event loop) and sends its next request when the previous one's
final flag arrives (a closed loop: the server stays saturated, and by Little's law a server that streams
faster leaves more of each request's time waiting for the one instance, so its first response comes later),
or, with `--rate R`, when its next request is due (an open load of R requests a second: the time to first
response a user sees below saturation). Per point: responses (tokens) a second, requests a second, time to
the first response (p50/p99) and between responses (p50), the server's CPU seconds per 1000 tokens (its
whole process group, Triton's stub processes included) and the client's own cores. `--trace-rate N` adds
the server's share of the first response's time from both servers' Triton-mode traces (request read to
first send) and where it went (queue, execute). Rounds alternate which server goes first. Needs the
Triton peer venv (bash benchmarks/peers/setup.sh triton); servers start as python_backend_bench starts them.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

import python_backend_bench as pbb  # noqa: E402
import python_backend_conformance as pbc  # noqa: E402

MODEL = "gen"
CONFIG = """name: "gen"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "N" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "TOKEN" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""
SOURCE = """import threading
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "N").as_numpy().ravel()[0])
            threading.Thread(target=self.stream, args=(request.get_response_sender(), n), daemon=True).start()
        return None

    def stream(self, sender, n):
        for i in range(n):
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("TOKEN", np.array([i], np.int32))]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
"""


def start(kind: str, work: Path, trace_rate: int = 0):
    def traced(server) -> None:  # the same Triton-mode trace flags for both servers
        server.trace_file = work / f"{kind}-trace.json"
        for path in work.glob(f"{kind}-trace.json*"):
            path.unlink()
        server.cmd += [f"--trace-config=triton,file={server.trace_file}", "--trace-config=level=TIMESTAMPS",
                       f"--trace-config=rate={trace_rate}"]
    return pbb.one_model_server(kind, work, MODEL, CONFIG, SOURCE, traced if trace_rate else None)


async def _client(url: str, tokens: int, until: float, record: dict, interval: float = 0.0, offset: float = 0.0
                  ) -> None:
    import numpy as np
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    outbox: asyncio.Queue = asyncio.Queue()

    async def requests():
        while True:
            item = await outbox.get()
            if item is None:
                return
            yield item

    n = grpcclient.InferInput("N", [1], "INT32")
    n.set_data_from_numpy(np.array([tokens], np.int32))
    try:
        stream = client.stream_infer(requests())
        due = time.perf_counter() + offset
        while time.monotonic() < until:
            if interval:  # paced: one request each `interval`, timed from when it was due (a late one waited)
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                sent, due = due, due + interval
            else:
                sent = time.perf_counter()
            await outbox.put({"model_name": MODEL, "inputs": [n]})
            got, last = 0, sent
            async for result, error in stream:
                if error is not None:
                    raise RuntimeError(str(error))
                now = time.perf_counter()
                response = result.get_response()
                if response.outputs:
                    record["first" if got == 0 else "gaps"].append((now - last) if got else (now - sent))
                    got += 1
                    last = now
                if got == tokens or response.parameters["triton_final_response"].bool_param:
                    break  # (without asking for the empty final response, the flag alone is not sent)
            if got != tokens:
                raise RuntimeError(f"{got} responses for {tokens} tokens")
            record["tokens"] += got
            record["requests"] += 1
        await outbox.put(None)
    finally:
        await client.close()


async def _run_clients(url: str, tokens: int, duration: float, interval: float, offsets) -> dict:
    record = {"first": [], "gaps": [], "tokens": 0, "requests": 0}
    until = time.monotonic() + duration
    await asyncio.gather(*(_client(url, tokens, until, record, interval, offset) for offset in offsets))
    return record


def _client_process(url, tokens, warmup, seconds, interval, offsets, ready, go, results) -> None:
    """One of --client-processes: its share of the streams on its own event loop, timed after a warm-up."""
    asyncio.run(_run_clients(url, tokens, warmup, interval, offsets))
    ready.put(True)
    go.wait()
    mine0 = time.process_time()
    record = asyncio.run(_run_clients(url, tokens, seconds, interval, offsets))
    results.put((record, time.process_time() - mine0))


def _in_processes(url: str, tokens: int, seconds: float, warmup: float, interval: float, offsets,
                  processes: int, server) -> tuple:
    """(record, elapsed s, server CPU s, client CPU s) with the streams spread over `processes` processes:
    one client loop holding every stream queues each first response behind the others' tokens (and sends
    late while busy); real users' streams come from many processes."""
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    workers = [context.Process(target=_client_process, args=(url, tokens, warmup, seconds, interval,
                                                             offsets[i::processes], ready, go, results))
               for i in range(processes)]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)
    cpu0, t0 = pbb.group_cpu_s(server.proc.pid), time.perf_counter()
    go.set()
    gathered = [results.get(timeout=seconds + 120) for _ in workers]
    elapsed, cpu = time.perf_counter() - t0, pbb.group_cpu_s(server.proc.pid) - cpu0
    for worker in workers:
        worker.join(30)
    record = {"first": [], "gaps": [], "tokens": 0, "requests": 0}
    for part, _ in gathered:
        for key in record:
            record[key] += part[key]
    return record, elapsed, cpu, sum(mine for _, mine in gathered)


async def point(server, concurrency: int, tokens: int, seconds: float, warmup: float, rate: float = 0.0,
                processes: int = 1) -> dict:
    """rate > 0: an open load of `rate` requests a second spread evenly over the clients (each sends its
    next request when it is due, or at once when its previous one ended late), instead of each client
    sending the moment its previous request ends (a closed loop, which keeps the server saturated).
    processes > 1: the clients are spread over that many processes, each with its own event loop."""
    url = f"127.0.0.1:{server.grpc}"
    interval = concurrency / rate if rate else 0.0
    offsets = [i * interval / concurrency for i in range(concurrency)]
    if processes > 1:
        record, elapsed, cpu, mine = await asyncio.get_running_loop().run_in_executor(
            None, _in_processes, url, tokens, seconds, warmup, interval, offsets, processes, server)
        client_cores = mine / elapsed
    else:
        await _run_clients(url, tokens, warmup, interval, offsets)
        cpu0, t0, mine0 = pbb.group_cpu_s(server.proc.pid), time.perf_counter(), time.process_time()
        record = await _run_clients(url, tokens, seconds, interval, offsets)
        elapsed, cpu = time.perf_counter() - t0, pbb.group_cpu_s(server.proc.pid) - cpu0
        client_cores = (time.process_time() - mine0) / elapsed
    first = sorted(record["first"]) or [0.0]
    return {"tokens_per_s": record["tokens"] / elapsed, "requests_per_s": record["requests"] / elapsed,
            "ttft_p50_ms": 1000 * statistics.median(first), "ttft_p99_ms": 1000 * first[int(0.99 * (len(first) - 1))],
            "gap_p50_ms": 1000 * statistics.median(record["gaps"] or [0.0]),
            "server_cpu_s_per_1k_tokens": 1000 * cpu / max(record["tokens"], 1),
            # near 1.0 the client's own loop is the limit and its time to first response includes its queueing
            "client_cores": client_cores}


def server_first_response_ms(trace_file: Path) -> dict:
    """From the server's own Triton-mode traces: request read (GRPC_WAITREAD_END) to its first response's
    GRPC_SEND_START, p50/p99 in ms: the server's share of the time to first response, free of the client's
    queueing. A trace's entries may be split over several objects with one id (Triton writes them so)."""
    stamps: dict = {}
    for path in sorted(trace_file.parent.glob(trace_file.name + "*")):
        text = path.read_text().strip()
        for entry in json.loads(text) if text else []:
            for stamp in entry.get("timestamps", []):
                stamps.setdefault(entry["id"], []).append((stamp["name"], stamp["ns"]))
    gaps = []
    for marks in stamps.values():
        read = [ns for name, ns in marks if name == "GRPC_WAITREAD_END"]
        sends = sorted(ns for name, ns in marks if name == "GRPC_SEND_START")
        if read and sends:
            gaps.append((sends[0] - read[0]) / 1e6)
    gaps.sort()
    if not gaps:
        return {"server_traces": 0}
    return {"server_traces": len(gaps), "server_first_p50_ms": statistics.median(gaps),
            "server_first_p99_ms": gaps[int(0.99 * (len(gaps) - 1))]}


async def sweep(server, kind: str, round_: int, levels, args, rows: list) -> None:
    """Every concurrency level on one event loop (grpc.aio channels belong to the loop that made them)."""
    for c in levels:
        row = {"round": round_, "server": kind, "concurrency": c, "tokens": args.tokens, "rate": args.rate,
               "client_processes": args.client_processes,
               **await point(server, c, args.tokens, args.seconds, args.warmup, args.rate, args.client_processes)}
        rows.append(row)
        if args.trace_rate:
            continue  # printed with the server's own figures once it has stopped
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", default="gpuserve,triton")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="requests a second in all (an open load, paced per client); 0: closed loop")
    parser.add_argument("--trace-rate", type=int, default=0,
                        help="N > 0: both servers trace one request in N (Triton-mode, TIMESTAMPS) and each point "
                             "gets the server-side time from reading a request to sending its first response; "
                             "each concurrency level then runs on a fresh server")
    parser.add_argument("--client-processes", type=int, default=1,
                        help="spread the clients over this many processes (each its own event loop)")
    parser.add_argument("--json", type=Path, default=pbb.RESULTS / "stream_bench.json")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.rounds = 2.0, 0.5, 1
    levels = [int(c) for c in args.concurrency.split(",")]
    kinds = args.servers.split(",")
    rows = []
    with open(pbb.LOCK, "w") as lock, tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        groups = [[c] for c in levels] if args.trace_rate else [levels]
        for round_ in range(args.rounds):
            for kind in (kinds if round_ % 2 == 0 else kinds[::-1]):
                for group in groups:
                    server = start(kind, Path(tmp), args.trace_rate)
                    try:
                        asyncio.run(sweep(server, kind, round_ + 1, group, args, rows))
                    finally:
                        pbc.stop(server)
                        pbc.clean_shm()
                    if args.trace_rate:  # the traces are complete once the server has stopped
                        rows[-1].update(server_first_response_ms(server.trace_file))
                        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                          for k, v in rows[-1].items()}), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
