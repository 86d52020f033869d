"""How much of a gRPC call's server CPU is the transport's: the same fixed ModelInferResponse served by
(a) a grpc.aio server (loadgen's trivial one) and (b) gpuserve's own HTTP/2 layer (server/grpc/http2.py)
with a stream owner that answers the fixed reply, no servicer. Both are driven by the same grpc.aio
closed-loop generator (loadgen.run_grpc, C-core client as tritonclient's), and the server process's CPU
time per call is read from /proc. The first version of (b), a standalone minimal HTTP/2 server, is what
made the case for the native transport (benchmarks/RESULTS.md, session 6).

    .venv/bin/pip install hpack && .venv/bin/python benchmarks/grpc_transport_probe.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

H2C_SERVER = r'''
import asyncio, sys
from tritonclient.grpc import service_pb2
from gpuserve.server.grpc.http2 import Http2Connection, literal
from gpuserve.server.grpc.native import RESPONSE_HEADERS as HEADERS

reply = service_pb2.ModelInferResponse(model_name="trivial")
reply.outputs.add(name="output", datatype="FP32", shape=[1, 10])
reply.raw_output_contents.append(bytes(40))
BODY = b"\x00" + len(reply.SerializeToString()).to_bytes(4, "big") + reply.SerializeToString()
TRAILERS = literal(b"grpc-status", b"0")


class Fixed:
    # The stream's owner: answers the fixed reply once the request has ended.
    def __init__(self, connection, stream_id):
        self.connection, self.stream_id = connection, stream_id

    def data(self, payload, end_stream):
        if end_stream:
            self.connection.send_headers(self.stream_id, HEADERS)
            self.connection.send_data(self.stream_id, BODY)
            self.connection.send_trailers(self.stream_id, TRAILERS)

    def reset(self):
        pass


async def main():
    connections = set()
    await asyncio.get_running_loop().create_server(
        lambda: Http2Connection(lambda conn, stream_id, headers, end: Fixed(conn, stream_id), connections),
        "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await asyncio.Event().wait()

try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
asyncio.run(main())
'''


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,32,64")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if importlib.util.find_spec("hpack") is None:
        sys.exit("needs the hpack package (pip install hpack)")
    servers = {"grpc.aio": loadgen._TRIVIAL_GRPC_SERVER, "gpuserve h2": H2C_SERVER}
    for _ in range(args.rounds):
        for name, code in servers.items():
            port = loadgen.free_port()
            proc = subprocess.Popen([sys.executable, "-c", code, str(port)], stdout=subprocess.PIPE, text=True)
            try:
                proc.stdout.readline()
                target = loadgen.make_target(f"grpc://127.0.0.1:{port}", "trivial", "grpc", "input", [1, 1024],
                                             "FP32", "output")
                for concurrency in (int(c) for c in args.concurrency.split(",")):
                    before = cpu_seconds(proc.pid)
                    result = loadgen.run_grpc(target, concurrency, args.seconds, 0.3)
                    used = cpu_seconds(proc.pid) - before
                    print(f"{name:<10} c={concurrency:<3} {result.rps:8.0f} calls/s  p50 {result.p50_ms:6.2f} ms  "
                          f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}  server CPU "
                          f"{used / max(result.requests, 1) * 1e6:5.0f} us/call (warm-up included)", flush=True)
            finally:
                proc.terminate()
                proc.wait(5)


if __name__ == "__main__":
    main()
