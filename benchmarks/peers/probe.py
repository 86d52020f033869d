"""Request-shape compatibility probe: the same request variants (the ones clients of Triton, MLServer
and KServe send) against gpuserve and each peer, one table of HTTP status per server. Differences
are what a user moving to gpuserve would hit.

    .venv/bin/python benchmarks/peers/probe.py [--servers gpuserve,triton,mlserver,kserve] [--model small]

Starts each server as compare.py does (same launchers), sends each variant once over raw HTTP/1.1,
stops it. Writes benchmarks/results/probe.md with the status and the first bytes of each answer.
"""

from __future__ import annotations

import argparse
import gzip
import json
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402
import run_http  # noqa: E402
from peers import run_kserve, run_mlserver, run_triton  # noqa: E402

LAUNCHERS = {
    "gpuserve": (run_http.launch_gpuserve, None),
    "triton": (run_triton.launch, run_triton.available),
    "mlserver": (run_mlserver.SERVERS["mlserver-nobatch"], run_mlserver.available),
    "kserve": (run_kserve.launch, run_kserve.available),
}


def variants(model: str, n: int):
    """(label, method, path, headers, body) for one [1, n] FP32 input named "input"."""
    row = [round(0.01 * i, 2) for i in range(n)]
    v2 = f"/v2/models/{model}/infer"

    def js(obj):
        return json.dumps(obj).encode()

    flat = {"inputs": [{"name": "input", "shape": [1, n], "datatype": "FP32", "data": row}]}
    ct = {"Content-Type": "application/json"}
    raw = b"".join(__import__("struct").pack("<f", x) for x in row)
    head = js({"inputs": [{"name": "input", "shape": [1, n], "datatype": "FP32",
                           "parameters": {"binary_data_size": len(raw)}}],
               "outputs": [{"name": "output", "parameters": {"binary_data": True}}]})
    head_nobin_out = js({"inputs": [{"name": "input", "shape": [1, n], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}]})
    yield "V2 JSON, flat data", "POST", v2, ct, js(flat)
    yield "V2 JSON, nested data [[...]]", "POST", v2, ct, js({"inputs": [dict(flat["inputs"][0], data=[row])]})
    yield "V2 JSON, integer data for FP32", "POST", v2, ct, js({"inputs": [dict(flat["inputs"][0], data=list(range(n)))]})
    yield "V2 JSON, id echoed", "POST", v2, ct, js(dict(flat, id="req-42"))
    yield "V2 JSON, outputs listed", "POST", v2, ct, js(dict(flat, outputs=[{"name": "output"}]))
    yield "V2 JSON, content_type np (MLServer)", "POST", v2, ct, js(
        {"inputs": [dict(flat["inputs"][0], parameters={"content_type": "np"})]})
    yield "V2 JSON, no Content-Type header", "POST", v2, {}, js(flat)
    yield "V2 JSON, charset in Content-Type", "POST", v2, {"Content-Type": "application/json; charset=utf-8"}, js(flat)
    yield "V2 JSON, shape without batch dim [n]", "POST", v2, ct, js(
        {"inputs": [dict(flat["inputs"][0], shape=[n])]})
    yield "V2 JSON, wrong data length", "POST", v2, ct, js({"inputs": [dict(flat["inputs"][0], data=row[:-1])]})
    yield "V2 JSON, unknown input name", "POST", v2, ct, js({"inputs": [dict(flat["inputs"][0], name="x")]})
    yield "V2 JSON, versioned path /versions/1", "POST", f"/v2/models/{model}/versions/1/infer", ct, js(flat)
    yield "V2 JSON, gzip Content-Encoding", "POST", v2, dict(ct, **{"Content-Encoding": "gzip"}), gzip.compress(js(flat))
    yield "V2 JSON, chunked request body", "POST", v2, dict(ct, **{"Transfer-Encoding": "chunked"}), js(flat)
    yield "V2 JSON, Expect: 100-continue", "POST", v2, dict(ct, Expect="100-continue"), js(flat)
    yield "V2 binary, binary output", "POST", v2, {"Content-Type": "application/octet-stream",
                                                 "Inference-Header-Content-Length": str(len(head))}, head + raw
    yield "V2 binary, JSON output (no outputs)", "POST", v2, {"Content-Type": "application/octet-stream",
                                                            "Inference-Header-Content-Length": str(len(head_nobin_out))}, head_nobin_out + raw
    yield "V1 instances", "POST", f"/v1/models/{model}:predict", ct, js({"instances": [row]})
    yield "V1 inputs (instead of instances)", "POST", f"/v1/models/{model}:predict", ct, js({"inputs": [row]})
    yield "V2 model metadata", "GET", f"/v2/models/{model}", {}, b""
    yield "V2 model ready", "GET", f"/v2/models/{model}/ready", {}, b""
    yield "V2 server metadata", "GET", "/v2", {}, b""
    yield "V2 health live", "GET", "/v2/health/live", {}, b""
    yield "V1 model status", "GET", f"/v1/models/{model}", {}, b""
    yield "V2 model config (Triton)", "GET", f"/v2/models/{model}/config", {}, b""
    yield "V2 repository index", "POST", "/v2/repository/index", ct, b"{}"
    yield "unknown model", "POST", "/v2/models/nope/infer", ct, js(flat)


def send(host: str, port: int, method: str, path: str, headers: dict, body: bytes, timeout: float = 10.0):
    """One raw HTTP/1.1 exchange on a fresh connection: (status, first bytes of the body)."""
    chunked = headers.get("Transfer-Encoding") == "chunked"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if not chunked and (body or method == "POST"):
        lines.append(f"Content-Length: {len(body)}")
    payload = body
    if chunked:
        half = len(body) // 2
        payload = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:half], body[half:]) if p) + b"0\r\n\r\n"
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        if headers.get("Expect") == "100-continue":
            sock.settimeout(2.0)
            try:
                interim = sock.recv(65536)
            except socket.timeout:
                interim = b""
            sock.settimeout(timeout)
            if interim and not interim.startswith(b"HTTP/1.1 100"):
                return _parse(interim + _drain(sock))
        sock.sendall(payload)
        return _parse(_drain(sock))


def _drain(sock) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data


def _parse(data: bytes):
    while data.startswith(b"HTTP/1.1 100"):
        data = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    if not data:
        return 0, "no response"
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head[9:12])
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        body = out
    return status, body[:160].decode("utf-8", "replace").replace("\n", " ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="gpuserve,triton,mlserver,kserve")
    parser.add_argument("--model", default="small")
    args = parser.parse_args()
    paths = harness.build_models()
    spec = harness.MODELS[args.model]
    table = {}
    servers = []
    for server in args.servers.split(","):
        launcher, available = LAUNCHERS[server]
        if available and available():
            print(f"{server}: {available()}", file=sys.stderr)
            continue
        work = harness.RESULTS / "servers" / f"probe-{server}"
        work.mkdir(parents=True, exist_ok=True)
        launch = launcher({args.model: paths[args.model]}, work)
        try:
            launch.process.wait_ready(launch.ready_urls)
            port = int(launch.base_url.rsplit(":", 1)[1])
            for label, method, path, headers, body in variants(args.model, spec.in_features):
                try:
                    table.setdefault(label, {})[server] = send("127.0.0.1", port, method, path, headers, body)
                except OSError as exc:
                    table.setdefault(label, {})[server] = (0, f"{type(exc).__name__}: {exc}")
            servers.append(server)
        finally:
            launch.process.stop()
    out = ["| request | " + " | ".join(servers) + " |", "|---|" + "---|" * len(servers)]
    details = []
    for label, answers in table.items():
        cells = [str(answers.get(s, (0, ""))[0]) for s in servers]
        flag = " **≠**" if len({c[0] for c in cells if c != "0"}) > 1 else ""
        out.append(f"| {label}{flag} | " + " | ".join(cells) + " |")
        for s in servers:
            status, text = answers.get(s, (0, ""))
            details.append(f"- {label} / {s}: {status} `{text[:140]}`")
    text = "\n".join(out) + "\n\n" + "\n".join(details) + "\n"
    (harness.RESULTS / "probe.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
