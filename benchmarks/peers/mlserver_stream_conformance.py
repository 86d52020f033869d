"""MLServer 1.7.1's streaming against gpuserve's on one folder: a runtime with its own `predict_stream`
(tokens) and one without (plain), asked over REST `infer_stream`/`generate_stream`/`generate` and over gRPC
`ModelStreamInfer` with MLServer's own generated stub (run in MLServer's venv, so the client is MLServer's).
Events and messages are compared whole, generated ids and the servers' names in the CloudEvents headers
masked; error bodies by their keys. Not a test; run by hand after `bash benchmarks/peers/setup.sh mlserver`:

    .venv/bin/python benchmarks/peers/mlserver_stream_conformance.py

`parallel_workers: 0` in both settings: MLServer's parallel workers (its default) never stream (its
dispatcher calls `predict` once), and gpuserve's workers answer the same way.

Differences kept on purpose (server/rest/infer_stream.py, server/grpc/mlserver_stream.py): a runtime that
fails before its first response is that error's status with `{"error": ...}` (MLServer: 500 with a plain-text
traceback), and an unknown model's REST stream a 404 (MLServer: 500, traceback); a failure after the first
response is a last `data: {"error": ...}` event (MLServer cuts the connection); a body that is not JSON is
400 `{"error"}` as on every route (MLServer: 422 `{"detail"}`); over gRPC a runtime without a `predict_stream`
of its own and an unknown model answer in Triton's form, which tritonclient and perf_analyzer read (MLServer's
form for the first; NOT_FOUND for the second).

Last run 2026-12-06 (session 26): 15 cases, 6 differ, the six above; the streamed events and gRPC messages of
the streaming runtime (one request, two requests on one stream, failures first and mid-stream) are the same.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers.classic_conformance import free_port  # noqa: E402
from peers.mlserver_conformance import MLSERVER, start, stop  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from mlserver_stream_models import RUNTIME  # noqa: E402

GRPC_CLIENT = """
import json, sys, grpc
from mlserver.grpc import dataplane_pb2 as pb, dataplane_pb2_grpc as services
from google.protobuf.json_format import MessageToDict

stub = services.GRPCInferenceServiceStub(grpc.insecure_channel(sys.argv[1]))
out = {}
for what, model, texts in json.loads(sys.argv[2]):
    requests = []
    for i, text in enumerate(texts):
        request = pb.ModelInferRequest(model_name=model, id=f"r{i}")
        tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(text.encode())
        requests.append(request)
    answers = []
    try:
        for answer in stub.ModelStreamInfer(iter(requests), timeout=30):
            answers.append(MessageToDict(answer))
        out[what] = ["OK", answers]
    except grpc.RpcError as exc:
        out[what] = [exc.code().name, exc.details(), answers]
    except Exception as exc:  # a message this client cannot read
        out[what] = [type(exc).__name__, answers]
print(json.dumps(out))
"""


def build(root: Path) -> None:
    for name, implementation in (("tokens", "runtime.Tokens"), ("plain", "runtime.Plain")):
        (root / name).mkdir(parents=True)
        (root / name / "runtime.py").write_text(textwrap.dedent(RUNTIME))
        (root / name / "model-settings.json").write_text(json.dumps(
            {"name": name, "implementation": implementation, "parallel_workers": 0}))


def _text(text, **extra):
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}], **extra}


REST = [
    ("infer_stream tokens", "/v2/models/tokens/infer_stream", _text("hello big world", id="my-id")),
    ("infer_stream no id", "/v2/models/tokens/infer_stream", _text("a b")),
    ("generate_stream tokens", "/v2/models/tokens/generate_stream", _text("one two", id="g")),
    ("generate (V2) tokens", "/v2/models/tokens/generate", _text("one two", id="g1")),
    ("infer_stream plain", "/v2/models/plain/infer_stream", _text("hello", id="p")),
    ("fails first", "/v2/models/tokens/infer_stream", _text("fail-first")),
    ("fails mid-stream", "/v2/models/tokens/infer_stream", _text("a boom b", id="m")),
    ("unknown model", "/v2/models/nope/infer_stream", _text("a")),
    ("not json", "/v2/models/tokens/infer_stream", b"{not json"),
]
GRPC = [("grpc one request", "tokens", ["hello big world"]), ("grpc two requests", "tokens", ["one two", "three"]),
        ("grpc fails mid-stream", "tokens", ["a boom b"]), ("grpc fails first", "tokens", ["fail-first"]),
        ("grpc plain", "plain", ["hi"]), ("grpc unknown model", "nope", ["x"])]


def _masked(value, generated):
    """The servers' own names and generated ids out of the way."""
    text = json.dumps(value, sort_keys=True)
    text = re.sub(r"io\.seldon\.serving\.deployment\.\w+", "io.seldon.serving.deployment.SERVER", text)
    text = re.sub(r'"Ce-Inferenceservicename": "\w+"', '"Ce-Inferenceservicename": "SERVER"', text)
    for uuid in set(generated):
        text = text.replace(uuid, "GENERATED")
    return json.loads(text)


def rest_case(port, path, body):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with httpx.stream("POST", f"http://127.0.0.1:{port}{path}", content=content, timeout=30,
                      headers={"Content-Type": "application/json"}) as reply:
        text, cut = "", False
        try:
            for piece in reply.iter_text():
                text += piece
        except httpx.RemoteProtocolError:  # the server closed the connection mid-body
            cut = True
    kind = reply.headers.get("content-type", "")
    if kind.startswith("text/event-stream"):
        events = [json.loads(chunk[len("data: "):]) for chunk in text.split("\n\n") if chunk.strip()]
        events += ["<connection cut>"] if cut else []
        ids = [e.get("id", "") for e in events if isinstance(e, dict) and re.fullmatch(r"[0-9a-f-]{36}",
                                                                                     e.get("id", ""))]
        return [reply.status_code, kind, _masked(events, ids)]
    try:
        answer = json.loads(text)
    except ValueError:
        return [reply.status_code, kind.split(";")[0], "<text>"]
    if isinstance(answer, dict) and "outputs" in answer:
        return [reply.status_code, kind, _masked(answer, [answer.get("id", "")])]
    return [reply.status_code, kind, sorted(answer) if isinstance(answer, dict) else answer]


def run(name: str, repo: Path, work: Path) -> dict:
    http, grpc_port = free_port(), free_port()
    proc = start(name, repo, (http, grpc_port, free_port()), work / f"{name}.log")
    try:
        deadline = time.monotonic() + 180
        while not all(_ready(http, m) for m in ("tokens", "plain")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not get ready (log in {work})")
            time.sleep(0.5)
        out = {what: rest_case(http, path, body) for what, path, body in REST}
        client = subprocess.run([str(MLSERVER.parent / "python"), "-c", GRPC_CLIENT, f"127.0.0.1:{grpc_port}",
                                 json.dumps(GRPC)], capture_output=True, text=True, timeout=120)
        if client.returncode:
            raise SystemExit(f"the gRPC client failed: {client.stderr[-2000:]}")
        out.update(json.loads(client.stdout))
        return out
    finally:
        stop(proc)


def _ready(port, model) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/models/{model}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> int:
    if not MLSERVER.exists():
        print(__doc__)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mlserver-stream-conf-"))
    build(work / "repo")
    answers = {name: run(name, work / "repo", work) for name in ("mlserver", "gpuserve")}
    differ = 0
    for what in answers["mlserver"]:
        pair = [json.dumps(answers[name][what], sort_keys=True) for name in ("mlserver", "gpuserve")]
        same = pair[0] == pair[1]
        differ += not same
        print(("  same " if same else "DIFFER"), what)
        if not same:
            for name, text in zip(("mlserver", "gpuserve"), pair):
                print(f"    {name:9s} {text[:600]}")
    print(f"\n{len(answers['mlserver'])} cases, {differ} differ (logs in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
