"""HTTP load generators behind one result record.

* `builtin`: a closed-loop asyncio generator written on raw `asyncio.Protocol` connections (one
  pre-encoded request, HTTP/1.1 keep-alive, Content-Length or chunked responses, TCP_NODELAY, uvloop
  when importable). Each connection sends its next request from `data_received` the moment the
  previous response is complete: no task switch, no HTTP library on the path. It always works.
* `hey` and `wrk` (when on PATH): driven as subprocesses, their summaries parsed into the same
  record (wrk through a Lua script that sets the POST body and prints exact percentiles).
* `vegeta` (when on PATH): `rate=0` with `-workers=N -max-workers=N` is its closed-loop mode;
  `write_vegeta_targets` writes the targets files `benchmarks/vegeta/attack.sh` uses.

Command line (traffic only to 127.0.0.1):

    python benchmarks/loadgen.py run --url http://127.0.0.1:8080 --model small --protocol v2-json \
        --concurrency 32 --seconds 5 [--generator builtin|hey|wrk|vegeta]
    python benchmarks/loadgen.py targets --url http://127.0.0.1:8080 --model small --out DIR
    python benchmarks/loadgen.py selftest [--seconds 3]     # how many req/s each generator drives
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

PROTOCOLS = ("v2-json", "v2-binary", "v1", "grpc")
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"
GENERATORS = ("builtin", "hey", "wrk", "vegeta")

_NP_DTYPES = {"FP32": "float32", "FP64": "float64", "FP16": "float16", "INT64": "int64", "INT32": "int32",
              "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}


# --------------------------------------------------------------------------------------------- records

@dataclasses.dataclass
class Result:
    """One load-test point. Latencies in milliseconds; `rps` counts successful responses only."""

    generator: str
    url: str
    concurrency: int
    seconds: float
    requests: int = 0
    errors: int = 0
    rps: float = 0.0
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    mean_ms: float = float("nan")
    max_ms: float = float("nan")
    error_sample: str = ""

    def line(self) -> str:
        return (f"{self.generator:>7} c={self.concurrency:<3} {self.rps:9.1f} req/s  p50 {self.p50_ms:7.2f} ms  "
                f"p90 {self.p90_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms  ok {self.requests}  errors {self.errors}"
                + (f"  ({self.error_sample[:120]})" if self.error_sample else ""))


@dataclasses.dataclass
class Target:
    """One HTTP request, repeated: everything a generator needs."""

    url: str
    method: str = "POST"
    body: bytes = b""
    headers: Dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or 80

    @property
    def path(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def raw(self) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}", "Connection: keep-alive"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if self.body or self.method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


# --------------------------------------------------------------------------------------------- payloads

def sample_array(shape: Sequence[int], datatype: str = "FP32", seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    dtype = _NP_DTYPES[datatype]
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 8, size=shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def make_target(base_url: str, model: str, protocol: str, input_name: str, shape: Sequence[int],
                datatype: str = "FP32", output_name: Optional[str] = None, seed: int = 0) -> Target:
    """The request body each protocol sends for one [rows, ...] input (rows = shape[0])."""
    base_url = base_url.rstrip("/")
    array = sample_array(shape, datatype, seed)
    if protocol == "v1":
        body = json.dumps({"instances": array.tolist()}).encode()
        return Target(f"{base_url}/v1/models/{model}:predict", body=body,
                      headers={"Content-Type": "application/json"})
    url = f"{base_url}/v2/models/{model}/infer"
    if protocol == "v2-json":
        body = json.dumps({"inputs": [{"name": input_name, "shape": list(shape), "datatype": datatype,
                                       "data": array.reshape(-1).tolist()}]}).encode()
        return Target(url, body=body, headers={"Content-Type": "application/json"})
    if protocol == "v2-binary":
        raw = array.tobytes()
        header = {"inputs": [{"name": input_name, "shape": list(shape), "datatype": datatype,
                              "parameters": {"binary_data_size": len(raw)}}]}
        if output_name:
            header["outputs"] = [{"name": output_name, "parameters": {"binary_data": True}}]
        else:
            header["parameters"] = {"binary_data_output": True}
        head = json.dumps(header).encode()
        return Target(url, body=head + raw, headers={"Content-Type": "application/octet-stream",
                                                     "Inference-Header-Content-Length": str(len(head))})
    if protocol == "grpc":  # base_url is grpc://HOST:PORT; body = one serialized ModelInferRequest
        return Target(base_url + GRPC_METHOD, method="GRPC",
                      body=grpc_infer_request(model, input_name, shape, datatype, array.tobytes(), output_name))
    raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")


def grpc_infer_request(model: str, input_name: str, shape: Sequence[int], datatype: str, raw: bytes,
                       output_name: Optional[str] = None) -> bytes:
    """A KServe V2 `ModelInferRequest`, serialized once (tensor bytes in `raw_input_contents`)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=input_name, datatype=datatype)
    tensor.shape.extend(int(d) for d in shape)
    if output_name:
        request.outputs.add(name=output_name)
    request.raw_input_contents.append(raw)
    return request.SerializeToString()


def model_io(base_url: str, model: str, timeout: float = 5.0) -> Tuple[str, List[int], str, Optional[str]]:
    """(input name, shape with -1 -> 1, datatype, first output name) from V2 model metadata."""
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/v2/models/{model}", timeout=timeout) as response:
        meta = json.load(response)
    first = meta["inputs"][0]
    shape = [1 if int(d) < 0 else int(d) for d in first["shape"]]
    outputs = meta.get("outputs") or []
    return first["name"], shape, first["datatype"], (outputs[0]["name"] if outputs else None)


# --------------------------------------------------------------------------------------------- builtin

class _Stats:
    __slots__ = ("lat", "errors", "sample", "window_start", "deadline", "hard_stop", "late")

    def __init__(self, window_start: float, deadline: float):
        self.lat: List[float] = []
        self.errors = 0
        self.sample = ""
        self.window_start = window_start
        self.deadline = deadline
        self.late = 0


class _Conn(asyncio.Protocol):
    """One keep-alive connection in a closed loop: a response completes -> the next request leaves."""

    def __init__(self, request: bytes, stats: _Stats, clock, done: asyncio.Future):
        self.request = request
        self.stats = stats
        self.clock = clock
        self.done = done
        self.buf = bytearray()
        self.sent_at = 0.0
        self.in_flight = False
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._send()

    def _send(self):
        self.in_flight = True
        self.sent_at = self.clock()
        self.transport.write(self.request)

    def _response_end(self) -> int:
        """Index just past one complete response in buf, or -1; -2 on a malformed one."""
        buf = self.buf
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            return -1
        head = bytes(buf[:head_end]).lower()
        start = head_end + 4
        i = head.find(b"\r\ncontent-length:")
        if i >= 0:
            j = head.find(b"\r\n", i + 2)
            length = int(head[i + 17:j if j >= 0 else len(head)])
            return start + length if len(buf) >= start + length else -1
        if b"\r\ntransfer-encoding:" in head and b"chunked" in head:
            pos = start
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return -1
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
                if size == 0:
                    end = buf.find(b"\r\n\r\n", eol)  # trailers (usually none) end with an empty line
                    return end + 4 if end >= 0 else -1
                pos = eol + 2 + size + 2
                if len(buf) < pos:
                    return -1
        if head.startswith(b"http/1.1 204") or head.startswith(b"http/1.1 304"):
            return start
        return -2

    def data_received(self, data):
        self.buf += data
        while self.in_flight:
            end = self._response_end()
            if end == -1:
                return
            now = self.clock()
            stats = self.stats
            if end == -2:
                stats.errors += 1
                stats.sample = stats.sample or f"unparsable response: {bytes(self.buf[:200])!r}"
                self.transport.close()
                return
            status = self.buf[9:12]
            ok = status[:1] == b"2"
            if self.sent_at >= stats.window_start and now <= stats.deadline:
                if ok:
                    stats.lat.append(now - self.sent_at)
                else:
                    stats.errors += 1
                    if not stats.sample:
                        stats.sample = bytes(self.buf[:min(end, 400)]).decode("latin-1", "replace")
            elif now > stats.deadline:
                stats.late += 1
            del self.buf[:end]
            self.in_flight = False
            if now < stats.deadline:
                self._send()
            else:
                self.transport.close()

    def connection_lost(self, exc):
        if self.in_flight and self.clock() < self.stats.deadline:
            self.stats.errors += 1
            self.stats.sample = self.stats.sample or f"connection lost: {exc or 'closed by server'}"
        if not self.done.done():
            self.done.set_result(None)


async def _builtin_async(target: Target, concurrency: int, seconds: float, warmup: float) -> Result:
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    request = target.raw()
    begin = clock()
    stats = _Stats(begin + warmup, begin + warmup + seconds)

    async def connection():
        while clock() < stats.deadline:
            done = loop.create_future()
            try:
                transport, _ = await loop.create_connection(
                    lambda: _Conn(request, stats, clock, done), target.host, target.port)
            except OSError as exc:
                stats.errors += 1
                stats.sample = stats.sample or f"connect: {exc}"
                await asyncio.sleep(0.05)
                continue
            try:
                await asyncio.wait_for(asyncio.shield(done), timeout=stats.deadline - clock() + 10.0)
            except asyncio.TimeoutError:
                stats.errors += 1
                stats.sample = stats.sample or "no response within 10 s after the deadline"
                transport.abort()
                return

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return _summarise("builtin", target.url, concurrency, seconds, stats.lat, stats.errors, stats.sample)


def _summarise(generator: str, url: str, concurrency: int, seconds: float, latencies_s: List[float],
               errors: int, sample: str) -> Result:
    result = Result(generator, url, concurrency, seconds, requests=len(latencies_s), errors=errors,
                    rps=len(latencies_s) / seconds, error_sample=sample)
    if latencies_s:
        import numpy as np

        lat = np.asarray(latencies_s) * 1e3
        result.p50_ms, result.p90_ms, result.p99_ms = (float(v) for v in np.percentile(lat, [50, 90, 99]))
        result.mean_ms, result.max_ms = float(lat.mean()), float(lat.max())
    return result


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # type: ignore

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def run_builtin(target: Target, concurrency: int, seconds: float, warmup: float = 0.5) -> Result:
    """Closed loop: `concurrency` connections, each one request in flight, for `seconds` after `warmup`."""
    loop = _new_loop()
    try:
        return loop.run_until_complete(_builtin_async(target, concurrency, seconds, warmup))
    finally:
        loop.close()


# --------------------------------------------------------------------------------------------- grpc (builtin)

def grpc_channels(concurrency: int) -> int:
    """Channels (one HTTP/2 connection each) for N callers: one per 8 callers, 1 to 8 (measured against
    the trivial server: 1 channel for 32 callers drives half of what 4 do)."""
    return max(1, min(8, (concurrency + 7) // 8))


def _grpc_options():
    return [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
            ("grpc.use_local_subchannel_pool", 1)]  # a distinct connection per channel


async def _grpc_async(target: Target, concurrency: int, seconds: float, warmup: float) -> Result:
    import grpc

    host_port, method = target.url.split("://", 1)[1].split("/", 1)
    channels = [grpc.aio.insecure_channel(host_port, options=_grpc_options())
                for _ in range(grpc_channels(concurrency))]
    # no serializers: the pre-serialized request bytes go out as they are, responses stay bytes
    calls = [ch.unary_unary("/" + method) for ch in channels]
    request = target.body
    clock = time.perf_counter
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), 10.0)
        begin = clock()
        window_start, deadline = begin + warmup, begin + warmup + seconds
        lat: List[float] = []
        errors, sample = 0, [""]

        async def caller(call):
            nonlocal errors
            while True:
                t0 = clock()
                if t0 >= deadline:
                    return
                try:
                    await call(request, timeout=20.0)
                except grpc.aio.AioRpcError as exc:
                    now = clock()
                    if t0 >= window_start and now <= deadline:
                        errors += 1
                        sample[0] = sample[0] or f"{exc.code().name}: {exc.details()}"
                    continue
                now = clock()
                if t0 >= window_start and now <= deadline:
                    lat.append(now - t0)

        await asyncio.gather(*(caller(calls[i % len(calls)]) for i in range(concurrency)))
    finally:
        for ch in channels:
            await ch.close()
    return _summarise("grpc.aio", target.url, concurrency, seconds, lat, errors, sample[0])


def run_grpc(target: Target, concurrency: int, seconds: float, warmup: float = 0.5) -> Result:
    """Closed loop over gRPC: `concurrency` grpc.aio callers, each one unary call in flight, on
    `grpc_channels(concurrency)` channels, the same serialized request every time."""
    loop = asyncio.new_event_loop()  # grpc.aio runs on the standard loop (not uvloop)
    try:
        return loop.run_until_complete(_grpc_async(target, concurrency, seconds, warmup))
    finally:
        loop.close()


def check_grpc(target: Target, timeout: float = 30.0) -> Tuple[int, bytes]:
    """One blocking call (waits for the server's port): (200, response bytes) or (gRPC code value, details)."""
    import grpc

    host_port, method = target.url.split("://", 1)[1].split("/", 1)
    with grpc.insecure_channel(host_port, options=_grpc_options()) as channel:
        try:
            return 200, channel.unary_unary("/" + method)(target.body, timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            return 500 + exc.code().value[0], f"{exc.code().name}: {exc.details()}".encode()


# --------------------------------------------------------------------------------------------- hey

def _hey_seconds(text: str, label: str) -> float:
    m = re.search(rf"{re.escape(label)}\s+in\s+([0-9.]+)\s+secs", text)
    return float(m.group(1)) * 1e3 if m else float("nan")


def parse_hey(text: str, url: str, concurrency: int, seconds: float) -> Result:
    ok = errors = 0
    for code, count in re.findall(r"\[(\d{3})\]\s+(\d+)\s+responses", text):
        if code.startswith("2"):
            ok += int(count)
        else:
            errors += int(count)
    sample = ""
    error_block = text.split("Error distribution:", 1)
    if len(error_block) == 2:
        for count, message in re.findall(r"\[(\d+)\]\s+(.+)", error_block[1]):
            errors += int(count)
            sample = sample or message.strip()
    total = re.search(r"Total:\s+([0-9.]+)\s+secs", text)
    elapsed = float(total.group(1)) if total else seconds
    result = Result("hey", url, concurrency, seconds, requests=ok, errors=errors,
                    rps=ok / elapsed if elapsed else 0.0, error_sample=sample)
    result.p50_ms, result.p90_ms, result.p99_ms = (_hey_seconds(text, p) for p in ("50%", "90%", "99%"))
    avg = re.search(r"Average:\s+([0-9.]+)\s+secs", text)
    slow = re.search(r"Slowest:\s+([0-9.]+)\s+secs", text)
    result.mean_ms = float(avg.group(1)) * 1e3 if avg else float("nan")
    result.max_ms = float(slow.group(1)) * 1e3 if slow else float("nan")
    return result


def run_hey(target: Target, concurrency: int, seconds: float, warmup: float = 0.5) -> Result:
    if not shutil.which("hey"):
        raise RuntimeError("hey is not on PATH (apt-get install -y hey)")
    with tempfile.NamedTemporaryFile(suffix=".body") as body:
        body.write(target.body)
        body.flush()
        cmd = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", target.method, "-t", "20"]
        if target.body:
            cmd += ["-D", body.name]
        for key, value in target.headers.items():
            if key.lower() == "content-type":
                cmd += ["-T", value]
            else:
                cmd += ["-H", f"{key}: {value}"]
        cmd.append(target.url)
        if warmup > 0:
            subprocess.run(cmd[:1] + ["-z", f"{warmup}s"] + cmd[3:], capture_output=True, timeout=warmup + 30)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"hey failed ({proc.returncode}): {proc.stderr.strip()[:400]}")
    return parse_hey(proc.stdout, target.url, concurrency, seconds)


# --------------------------------------------------------------------------------------------- wrk

_WRK_LUA = r"""
wrk.method = "{method}"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_RESULT %d %d %d %d %d %d %d %.1f %.1f %.1f %.1f %.1f\n",
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def wrk_script(target: Target, path: Path, body_path: Optional[Path] = None) -> Path:
    """A Lua script that makes wrk send `target`'s POST (body read from a file, byte-exact)."""
    body_path = body_path or path.with_suffix(".body")
    body_path.write_bytes(target.body)
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items())
    path.write_text(_WRK_LUA.format(method=target.method, body=str(body_path), headers=headers))
    return path


def parse_wrk(text: str, url: str, concurrency: int, seconds: float) -> Result:
    m = re.search(r"WRK_RESULT (.+)", text)
    if not m:
        raise RuntimeError(f"no WRK_RESULT line in wrk output: {text[-400:]}")
    f = m.group(1).split()
    duration_us, total, connect, read, write, status, timeout = (int(v) for v in f[:7])
    p50, p90, p99, mean, mx = (float(v) / 1e3 for v in f[7:12])
    errors = connect + read + write + status + timeout
    ok = max(total - status, 0)  # wrk counts non-2xx/3xx responses as requests too
    sample = f"connect {connect} read {read} write {write} status {status} timeout {timeout}" if errors else ""
    elapsed = duration_us / 1e6 if duration_us else seconds
    return Result("wrk", url, concurrency, seconds, requests=ok, errors=errors, rps=ok / elapsed,
                  p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=mean, max_ms=mx, error_sample=sample)


def run_wrk(target: Target, concurrency: int, seconds: float, warmup: float = 0.5, threads: int = 1) -> Result:
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not on PATH (apt-get install -y wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        script = wrk_script(target, Path(tmp) / "post.lua")
        threads = max(1, min(threads, concurrency))
        base = ["wrk", "-t", str(threads), "-c", str(concurrency), "--timeout", "20s", "-s", str(script)]
        if warmup > 0:
            subprocess.run(base + ["-d", f"{max(int(round(warmup)), 1)}s", target.url], capture_output=True,
                           timeout=warmup + 30)
        proc = subprocess.run(base + ["-d", f"{max(int(round(seconds)), 1)}s", target.url], capture_output=True, text=True,
                              timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[:400]}")
    return parse_wrk(proc.stdout, target.url, concurrency, seconds)


# --------------------------------------------------------------------------------------------- vegeta

def vegeta_target_text(target: Target, body_path: Path) -> str:
    lines = [f"{target.method} {target.url}"] + [f"{k}: {v}" for k, v in target.headers.items()]
    return "\n".join(lines + [f"@{body_path}"]) + "\n"


def write_vegeta_targets(out: Path, base_url: str, model: str, input_name: str, shape: Sequence[int],
                         datatype: str = "FP32", output_name: Optional[str] = None,
                         protocols: Sequence[str] = PROTOCOLS, relative_to: Optional[Path] = None) -> Dict[str, Path]:
    """`out/MODEL.PROTOCOL.targets` + `out/bodies/MODEL.PROTOCOL.body` per protocol (vegeta http format).

    Body paths are absolute, or relative to `relative_to` (the directory vegeta is run from)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "bodies").mkdir(exist_ok=True)
    written = {}
    for protocol in protocols:
        target = make_target(base_url, model, protocol, input_name, shape, datatype, output_name)
        body = out / "bodies" / f"{model}.{protocol}.body"
        body.write_bytes(target.body)
        shown = Path(os.path.relpath(body.resolve(), relative_to.resolve())) if relative_to else body.resolve()
        path = out / f"{model}.{protocol}.targets"
        path.write_text(vegeta_target_text(target, shown))
        written[protocol] = path
    return written


def parse_vegeta_json(text: str, url: str, concurrency: int, seconds: float) -> Result:
    report = json.loads(text)
    codes = report.get("status_codes") or {}
    ok = sum(int(n) for code, n in codes.items() if str(code).startswith("2"))
    total = int(report.get("requests", 0))
    lat = report.get("latencies", {})
    errors = total - ok
    result = Result("vegeta", url, concurrency, seconds, requests=ok, errors=errors,
                    rps=ok / seconds if seconds else 0.0,
                    p50_ms=lat.get("50th", float("nan")) / 1e6, p90_ms=lat.get("90th", float("nan")) / 1e6,
                    p99_ms=lat.get("99th", float("nan")) / 1e6, mean_ms=lat.get("mean", float("nan")) / 1e6,
                    max_ms=lat.get("max", float("nan")) / 1e6,
                    error_sample="; ".join((report.get("errors") or [])[:2]))
    return result


def run_vegeta(target: Target, concurrency: int, seconds: float, warmup: float = 0.5) -> Result:
    """vegeta's closed-loop mode: -rate=0 with a fixed pool of N workers."""
    if not shutil.which("vegeta"):
        raise RuntimeError("vegeta is not on PATH (https://github.com/tsenart/vegeta/releases)")
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body"
        body.write_bytes(target.body)
        targets = Path(tmp) / "targets"
        targets.write_text(vegeta_target_text(target, body))
        attack = ["vegeta", "attack", f"-targets={targets}", "-rate=0", f"-workers={concurrency}",
                  f"-max-workers={concurrency}", "-keepalive=true", "-timeout=20s"]
        if warmup > 0:
            subprocess.run(attack + [f"-duration={warmup}s"], capture_output=True, timeout=warmup + 30)
        shell = (" ".join(attack + [f"-duration={seconds}s"]) + " | vegeta report -type=json")
        proc = subprocess.run(shell, shell=True, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"vegeta failed ({proc.returncode}): {proc.stderr.strip()[:400]}")
    return parse_vegeta_json(proc.stdout, target.url, concurrency, seconds)


# --------------------------------------------------------------------------------------------- perf_analyzer

def perf_analyzer_path() -> Optional[str]:
    """Triton's C++ load generator: on PATH, or where scripts/install_perf_analyzer.sh puts it."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    return shutil.which("perf_analyzer") or (str(beside) if beside.exists() else None)


def parse_perf_analyzer(csv_text: str, stdout: str, url: str, concurrency: int, seconds: float) -> Result:
    """Its `-f` CSV row (percentiles in us) and the request count and mean latency of its summary."""
    lines = [line for line in csv_text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise RuntimeError(f"perf_analyzer wrote no measurement: {stdout.strip()[-400:]}")
    row = dict(zip(lines[0].split(","), lines[1].split(",")))
    counted = re.search(r"Request count:\s+(\d+)", stdout)
    result = Result("perf_an", url, concurrency, seconds, requests=int(counted.group(1)) if counted else 0,
                    rps=float(row["Inferences/Second"]))
    result.p50_ms, result.p90_ms, result.p99_ms = (float(row[f"{p} latency"]) / 1e3 for p in ("p50", "p90", "p99"))
    mean = re.search(r"Avg latency:\s+(\d+) usec", stdout)
    result.mean_ms = int(mean.group(1)) / 1e3 if mean else float("nan")
    return result


def run_perf_analyzer(base_url: str, model: str, protocol: str, concurrency: int, seconds: float,
                      warmup: float = 0.5, sync: bool = False) -> Result:
    """perf_analyzer at one concurrency: V2 binary over HTTP (its default) or gRPC, or TensorFlow Serving's
    gRPC Predict (`tfserving`: rows of one, the signature's first dimension the batch), random inputs from the
    model's metadata, asynchronous calls above one client (so its own threads do not bound the point) unless
    `sync` (a thread a client; the only mode its TFServing client has). It measures until three windows agree;
    the windows here are a third of `seconds` and any three agree."""
    exe = perf_analyzer_path()
    if not exe:
        raise RuntimeError("perf_analyzer is not installed (bash scripts/install_perf_analyzer.sh)")
    if protocol not in ("v2-binary", "grpc", "tfserving"):
        raise ValueError("perf_analyzer speaks V2 binary over HTTP and gRPC, and TensorFlow Serving's gRPC")
    hostport = urllib.parse.urlsplit(base_url).netloc
    kind = ["--service-kind", "tfserving", "-b", "1"] if protocol == "tfserving" else []

    def command(window_s):
        cmd = [exe, "-m", model, "-u", hostport, "-i", "http" if protocol == "v2-binary" else "grpc", *kind,
               "--concurrency-range", str(concurrency), "--measurement-interval", str(max(int(window_s * 1000), 100)),
               "--stability-percentage", "999", "--max-trials", "3"]
        return cmd + (["--async"] if concurrency > 1 and not sync and protocol != "tfserving" else [])

    if warmup > 0:  # this perf_analyzer (2.48) has no warm-up option: a short run of its own
        subprocess.run(command(warmup / 3), capture_output=True, timeout=warmup * 3 + 60)
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "pa.csv"
        limit = seconds * 3 + 120
        try:  # a point the server cannot finish is that point's failure, not the run's
            proc = subprocess.run(command(seconds / 3) + ["-f", str(csv_path)], capture_output=True, text=True,
                                  timeout=limit)
        except subprocess.TimeoutExpired:
            return Result("perf_an", base_url, concurrency, seconds, errors=1,
                          error_sample=f"perf_analyzer measured nothing in {limit:.0f} s")
        if proc.returncode != 0:
            return Result("perf_an", base_url, concurrency, seconds, errors=1,
                          error_sample=f"perf_analyzer ended {proc.returncode}: {(proc.stdout + proc.stderr)[-300:]}")
        return parse_perf_analyzer(csv_path.read_text() if csv_path.exists() else "", proc.stdout, base_url,
                                   concurrency, seconds)


# --------------------------------------------------------------------------------------------- dispatch

RUNNERS = {"builtin": run_builtin, "hey": run_hey, "wrk": run_wrk, "vegeta": run_vegeta}


def available_generators() -> List[str]:
    return ["builtin"] + [g for g in ("hey", "wrk", "vegeta") if shutil.which(g)]


def run(generator: str, target: Target, concurrency: int, seconds: float, warmup: float = 0.5) -> Result:
    if generator not in RUNNERS:
        raise ValueError(f"generator must be one of {GENERATORS}")
    if target.method == "GRPC":
        if generator != "builtin":
            raise RuntimeError(f"{generator} speaks HTTP only; gRPC points use the builtin generator (grpc.aio)")
        return run_grpc(target, concurrency, seconds, warmup)
    return RUNNERS[generator](target, concurrency, seconds, warmup)


def check_target(target: Target, timeout: float = 10.0) -> Tuple[int, bytes]:
    """Send the request once (urllib): (status, body). Used to fail fast on a rejected request shape."""
    if target.method == "GRPC":
        return check_grpc(target)
    request = urllib.request.Request(target.url, data=target.body or None, method=target.method,
                                     headers=target.headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --------------------------------------------------------------------------------------------- selftest

_TRIVIAL_SERVER = r"""
import asyncio, sys
RESP = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, bytearray()
    def data_received(self, d):
        self.buf += d
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0: return
            head = bytes(self.buf[:end]).lower(); i = head.find(b"content-length:")
            n = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else len(head)]) if i >= 0 else 0
            if len(self.buf) < end + 4 + n: return
            del self.buf[:end + 4 + n]; self.t.write(RESP)
try:
    import uvloop; loop = uvloop.new_event_loop()
except ImportError:
    loop = asyncio.new_event_loop()
server = loop.run_until_complete(loop.create_server(P, "127.0.0.1", int(sys.argv[1]), backlog=1024))
print("ready", flush=True); loop.run_forever()
"""


_TRIVIAL_GRPC_SERVER = r"""
import asyncio, sys, grpc
from tritonclient.grpc import service_pb2
out = service_pb2.ModelInferResponse(model_name="trivial")
out.outputs.add(name="output", datatype="FP32", shape=[1, 10]); out.raw_output_contents.append(bytes(40))
RESP = out.SerializeToString()
async def infer(request, context):
    return RESP
async def main():
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handler = grpc.method_handlers_generic_handler("inference.GRPCInferenceService",
        {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)})   # bytes in, bytes out
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start(); print("ready", flush=True); await server.wait_for_termination()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def selftest(seconds: float = 3.0, concurrency: Sequence[int] = (1, 32, 64), generators: Optional[Sequence[str]] = None,
             url: Optional[str] = None) -> List[Result]:
    """Drive a trivial endpoint (a raw-asyncio HTTP server in its own process returning a fixed 200,
    or `url` with GET): what each generator can drive on this machine."""
    proc = None
    if url is None:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", _TRIVIAL_SERVER, str(port)], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()
        target = Target(f"http://127.0.0.1:{port}/v2/models/trivial/infer", body=b'{"inputs":[]}',
                        headers={"Content-Type": "application/json"})
    else:
        target = Target(url, method="GET")
    results = []
    try:
        for generator in generators or available_generators():
            for c in concurrency:
                result = run(generator, target, c, seconds, warmup=0.3)
                print(result.line(), flush=True)
                results.append(result)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(5)
    return results


def selftest_grpc(seconds: float = 3.0, concurrency: Sequence[int] = (1, 32, 64)) -> List[Result]:
    """The grpc.aio generator against a trivial grpc.aio server (its own process, a fixed
    ModelInferResponse for any ModelInfer), with a request the size of the `mlp` model's (1024 FP32)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _TRIVIAL_GRPC_SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    results = []
    try:
        proc.stdout.readline()
        target = make_target(f"grpc://127.0.0.1:{port}", "trivial", "grpc", "input", [1, 1024], "FP32", "output")
        for c in concurrency:
            result = run_grpc(target, c, seconds, warmup=0.3)
            print(result.line(), flush=True)
            results.append(result)
    finally:
        proc.terminate()
        proc.wait(5)
    return results


# --------------------------------------------------------------------------------------------- CLI

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="one load-test point (or a concurrency sweep) against a served model")
    r.add_argument("--url", default="http://127.0.0.1:8080")
    r.add_argument("--model", required=True)
    r.add_argument("--protocol", choices=PROTOCOLS, default="v2-json")
    r.add_argument("--generator", choices=GENERATORS, default="builtin")
    r.add_argument("--concurrency", default="32", help="one value or a comma list, e.g. 1,8,32,64")
    r.add_argument("--seconds", type=float, default=5.0)
    r.add_argument("--warmup", type=float, default=0.5)
    r.add_argument("--rows", type=int, default=1, help="rows per request (batch dimension)")
    t = sub.add_parser("targets", help="write vegeta targets + bodies for a served model")
    t.add_argument("--url", default="http://127.0.0.1:8080")
    t.add_argument("--model", required=True)
    t.add_argument("--out", type=Path, default=Path("benchmarks/results/vegeta"))
    t.add_argument("--protocols", default=",".join(PROTOCOLS))
    t.add_argument("--input", default=None, help="input name (default: from model metadata)")
    t.add_argument("--shape", default=None, help="e.g. 1,16 (default: from model metadata)")
    t.add_argument("--datatype", default="FP32")
    t.add_argument("--relative-to", type=Path, default=None, help="write body paths relative to this folder")
    s = sub.add_parser("selftest", help="req/s each generator drives against a trivial endpoint")
    s.add_argument("--seconds", type=float, default=3.0)
    s.add_argument("--concurrency", default="1,32,64")
    s.add_argument("--generators", default=None)
    s.add_argument("--url", default=None, help="GET this URL instead of the built-in trivial server")
    s.add_argument("--grpc", action="store_true", help="the grpc.aio generator against a trivial grpc.aio server")
    args = parser.parse_args(argv)

    if args.command == "selftest" and args.grpc:
        selftest_grpc(args.seconds, [int(c) for c in args.concurrency.split(",")])
        return 0
    if args.command == "selftest":
        selftest(args.seconds, [int(c) for c in args.concurrency.split(",")],
                 args.generators.split(",") if args.generators else None, args.url)
        return 0
    if args.command == "targets":
        if args.input and args.shape:
            name, shape, datatype, output = args.input, [int(d) for d in args.shape.split(",")], args.datatype, None
        else:
            name, shape, datatype, output = model_io(args.url, args.model)
        written = write_vegeta_targets(args.out, args.url, args.model, name, shape, datatype, output,
                                       args.protocols.split(","), args.relative_to)
        for protocol, path in written.items():
            print(f"{protocol}: {path}")
        return 0
    name, shape, datatype, output = model_io(args.url, args.model)
    shape[0] = args.rows
    target = make_target(args.url, args.model, args.protocol, name, shape, datatype, output)
    status, body = check_target(target)
    if status // 100 != 2:
        print(f"the server rejects this request: HTTP {status}: {body[:400]!r}", file=sys.stderr)
        return 1
    for c in (int(v) for v in args.concurrency.split(",")):
        print(run(args.generator, target, c, args.seconds, args.warmup).line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
