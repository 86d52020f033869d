"""How much of a gRPC call's server CPU is grpc.aio's: the same fixed ModelInferResponse served by
(a) a grpc.aio server (loadgen's trivial one) and (b) a minimal HTTP/2 (h2c) server on asyncio written
here: preface, SETTINGS/PING acks, HPACK-decoded request headers (the `hpack` package), gRPC message
framing, constant response header blocks, WINDOW_UPDATEs for what it reads. Both are driven by the
same grpc.aio closed-loop generator (loadgen.run_grpc, C-core client as tritonclient's), and the server
process's CPU time per call is read from /proc.

(b) is a probe, not a transport: no flow control on what it sends (replies are small), no streaming,
compression, deadlines, RST_STREAM or GOAWAY. It bounds what a native transport for gpuserve's
servicer could save against grpc.aio (benchmarks/RESULTS.md, session 6).

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
from hpack import Decoder
from tritonclient.grpc import service_pb2

reply = service_pb2.ModelInferResponse(model_name="trivial")
reply.outputs.add(name="output", datatype="FP32", shape=[1, 10])
reply.raw_output_contents.append(bytes(40))
MESSAGE = reply.SerializeToString()
DATA, HEADERS, SETTINGS, PING, WINDOW_UPDATE = 0, 1, 4, 6, 8
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


# HPACK, no dynamic table: ":status: 200" is static entry 8; content-type (static name 31) and
# grpc-status (a new name) as literals without indexing.
RESPONSE_HEADERS = b"\x88\x0f\x10\x10application/grpc"
TRAILERS = b"\x00\x0bgrpc-status\x010"
BODY = b"\x00" + len(MESSAGE).to_bytes(4, "big") + MESSAGE


class Connection(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer, self.preface = transport, bytearray(), False
        self.decoder, self.bodies, self.paths = Decoder(), {}, {}
        transport.write(frame(SETTINGS, 0, 0) + frame(WINDOW_UPDATE, 0, 0, (1 << 30).to_bytes(4, "big")))

    def data_received(self, data):
        buffer = self.buffer
        buffer += data
        if not self.preface:
            if len(buffer) < 24:
                return
            del buffer[:24]
            self.preface = True
        out, pos, end = [], 0, len(buffer)
        while end - pos >= 9:
            length = int.from_bytes(buffer[pos:pos + 3], "big")
            if end - pos < 9 + length:
                break
            kind, flags = buffer[pos + 3], buffer[pos + 4]
            stream = int.from_bytes(buffer[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buffer[pos + 9:pos + 9 + length])
            pos += 9 + length
            if flags & PADDED and kind in (DATA, HEADERS):
                payload = payload[1:len(payload) - payload[0]]
            if kind == DATA:
                self.bodies[stream] = self.bodies.get(stream, b"") + payload
                if length:
                    grant = length.to_bytes(4, "big")
                    out.append(frame(WINDOW_UPDATE, 0, 0, grant) + frame(WINDOW_UPDATE, 0, stream, grant))
                if flags & END_STREAM:
                    self.bodies.pop(stream)
                    self.paths.pop(stream, None)
                    out.append(frame(HEADERS, END_HEADERS, stream, RESPONSE_HEADERS) + frame(DATA, 0, stream, BODY)
                               + frame(HEADERS, END_HEADERS | END_STREAM, stream, TRAILERS))
            elif kind == HEADERS:
                if flags & PRIORITY:
                    payload = payload[5:]
                self.paths[stream] = dict(self.decoder.decode(payload)).get(":path")
            elif kind == SETTINGS and not flags & ACK:
                out.append(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                out.append(frame(PING, ACK, 0, payload))
        del buffer[:pos]
        if out:
            self.transport.write(b"".join(out))


async def main():
    await asyncio.get_running_loop().create_server(Connection, "127.0.0.1", int(sys.argv[1]))
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
    servers = {"grpc.aio": loadgen._TRIVIAL_GRPC_SERVER, "h2c probe": H2C_SERVER}
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
