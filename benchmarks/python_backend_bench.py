"""Triton Python-backend models (config.pbtxt `backend: "python"` + 1/model.py) on gpuserve and on real
Triton 2.51, under the same load generator, plus the in-process limit. A benchmark, not a test.

    .venv/bin/python benchmarks/python_backend_bench.py                 # 2 rounds, 4 s a point (~8 min)
    .venv/bin/python benchmarks/python_backend_bench.py --quick         # smoke run (~1 min)
    .venv/bin/python benchmarks/python_backend_bench.py --render FILE   # the tables again from a JSON file

Needs the Triton peer venv (bash benchmarks/peers/setup.sh triton). The servers are started exactly as
peers/python_backend_conformance.py starts them (its prepare_backends / triton_server / gpuserve_server /
wait_for_models / stop / clean_shm, imported): the bundled tritonserver binary directly on a plain model
repository, and `gpuserve start FOLDER`. One server at a time; round r runs Triton first when r is even,
gpuserve first when odd (the VM is noisy: two rounds give ranges).

Models (written by `write_repository`, one instance each, `dynamic_batching {}`, max_batch_size 64):
- tiny:  INPUT0 FP32 [16] -> OUTPUT0 = 2 * INPUT0, one response per request: per-request overhead.
- heavy: INPUT0 FP32 [256] -> relu(relu(x @ W1) @ W2) @ W3 (256x1024, 1024x1024, 1024x256, seeded random
         weights), all requests of an execute concatenated into one NumPy call, split back: batching matters.
- bls:   INPUT0 FP32 [16] -> the requests of an execute concatenated and sent to `tiny` in one BLS call
         (`InferenceRequest(...).exec()`), its answer split back: the cost of a model calling a model. It has
         no in-process limit (its execute needs a server to call); its answers are checked against tiny's.

`--gpuserve-workers N` starts gpuserve with `--workers N` (N processes on the same ports); each worker
counts its own statistics, so batch sizes are not shown then and CPU per request divides by the requests
the load generator counted.

Load: benchmarks/loadgen.py, closed loop, batch-1 requests ([1, 16] / [1, 256]); `run_builtin` for HTTP
V2 binary and `run_grpc` for gRPC; concurrency 1, 8, 32, 64. `--generator perf_analyzer` drives the points
with Triton's own C++ load generator instead (loadgen.run_perf_analyzer), so the Python clients are no bound.
Per point: req/s, p50/p99, the mean batch size the server formed (inference_count / execution_count deltas of
GET /v2/models/NAME/stats, warm-up included) and the server's CPU time per request (utime+stime of its whole
process group, which holds Triton's stub processes too, over the same window).

In-process limit: the same TritonPythonModel classes, imported here with gpuserve.triton_pb_utils as
`triton_python_backend_utils`, execute() called on lists of N prepared requests (N = 1 and the mean batch
sizes gpuserve formed) back to back: rows/s. A "numpy alone" line runs just the heavy math in each
venv's interpreter (gpuserve's .venv and Triton's .peers/triton have different NumPy/OpenBLAS builds).

Noise: before each point it waits (up to --quiet-wait s) until other processes use under half of
--max-other cores, and measures a point again (up to --retries times) when they used more than
--max-other cores meanwhile (/proc/stat busy time minus the server's process group and this process).

BLAS threads: BLAS_ENV below is put in the environment of both servers (and of this process and the
numpy-alone subprocesses) before they start. The whole run holds /tmp/gpuserve-bench.lock (fcntl).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

BLAS_ENV = {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
os.environ.update(BLAS_ENV)  # before NumPy loads here (the limit runs in this process)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))

import loadgen  # noqa: E402
import python_backend_conformance as pbc  # noqa: E402

LOCK = Path("/tmp/gpuserve-bench.lock")
RESULTS = HERE / "results"
MODEL_NAMES = ("tiny", "heavy", "bls")
FEATURES = {"tiny": 16, "heavy": 256, "bls": 16}
PROTOCOLS = ("v2-binary", "grpc")
CONCURRENCY = (1, 8, 32, 64)
TRITON_PYTHON = pbc.TRITON_VENV / "bin" / "python"

# --------------------------------------------------------------------------------------------- models

_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 64
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {features} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {features} ] }} ]
dynamic_batching {{ }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""

_TINY = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", x * 2)]))
        return responses
"""

_HEAVY = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        rng = np.random.default_rng(1234)
        self.w1 = (rng.standard_normal((256, 1024)) / 16).astype(np.float32)
        self.w2 = (rng.standard_normal((1024, 1024)) / 32).astype(np.float32)
        self.w3 = (rng.standard_normal((1024, 256)) / 32).astype(np.float32)

    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        x = np.concatenate(xs, axis=0)
        h = np.maximum(x @ self.w1, 0)
        h = np.maximum(h @ self.w2, 0)
        y = h @ self.w3
        cuts = np.cumsum([len(a) for a in xs])[:-1]
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", part)])
                for part in np.split(y, cuts)]
"""

_BLS = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        parts = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        call = pb_utils.InferenceRequest(model_name="tiny", requested_output_names=["OUTPUT0"],
                                         inputs=[pb_utils.Tensor("INPUT0", np.concatenate(parts))])
        answer = call.exec()
        if answer.has_error():
            return [pb_utils.InferenceResponse(error=answer.error()) for _ in requests]
        y = pb_utils.get_output_tensor_by_name(answer, "OUTPUT0").as_numpy()
        cuts = np.cumsum([len(p) for p in parts])[:-1]
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", part)])
                for part in np.split(y, cuts)]
"""

SOURCES = {"tiny": _TINY, "heavy": _HEAVY, "bls": _BLS}
CALLS_THE_SERVER = {"bls": "tiny"}  # model -> the model it calls (BLS): answers as that one, no in-process limit


def write_repository(root: Path) -> Path:
    for name in MODEL_NAMES:
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(_CONFIG.format(name=name, features=FEATURES[name]))
        (root / name / "1" / "model.py").write_text(SOURCES[name])
    return root


# --------------------------------------------------------------------------------------------- servers

def one_model_server(kind: str, work: Path, name: str, config: str, source: str, prepare=None):
    """One Python-backend model in a repository of its own, served by `kind` (gpuserve or triton) and ready
    (payload_bench, stream_bench); `prepare(server)` may add to its launch line before it starts."""
    repo = work / f"{kind}-{name}-repo"
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(config)
    (repo / name / "1" / "model.py").write_text(source)
    server = pbc.triton_server(work, repo) if kind == "triton" else pbc.gpuserve_server(work, repo)
    if prepare is not None:
        prepare(server)
    pbc.MODELS = {name: None}  # wait_for_models waits for its module's MODELS
    server.start()
    pbc.wait_for_models(server)
    server.wait([f"/v2/models/{name}/ready"], timeout=120)
    return server


def start_server(kind: str, work: Path, workers: int = 1):
    repo = write_repository(work / f"{kind}-repo")
    server = pbc.triton_server(work, repo) if kind == "triton" else pbc.gpuserve_server(work, repo)
    if kind == "gpuserve" and workers > 1:  # `gpuserve start --workers N`: N processes on the same ports
        server.cmd += ["--workers", str(workers)]
    server.env.update(BLAS_ENV)
    pbc.MODELS = {name: None for name in MODEL_NAMES}  # wait_for_models waits for its module's MODELS
    server.start()
    began = time.monotonic()
    states = pbc.wait_for_models(server)
    # gpuserve is live before its models load, and its index may list a model not yet loading as
    # UNAVAILABLE "not loaded", which wait_for_models takes as settled: wait for readiness too
    try:
        server.wait([f"/v2/models/{m}/ready" for m in MODEL_NAMES], timeout=120)
        states = pbc.model_states(server)
    except RuntimeError:
        pass
    bad = {m: s for m, s in states.items() if m in MODEL_NAMES and s[0] != "READY"}
    if bad or not all(m in states for m in MODEL_NAMES):
        pbc.stop(server)
        raise RuntimeError(f"{kind}: models not ready: {states} (log {server.log})")
    print(f"  {kind} ready in {time.monotonic() - began:.1f} s (log {server.log})", flush=True)
    return server


def group_cpu_s(pgid: int) -> float:
    """utime + stime of every live process in the group (the server and, for Triton, its stubs)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total / tick


def busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """This process (the load generator) and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def model_counts(server, model: str):
    stats = pbc.http_json(server, "GET", f"/v2/models/{model}/stats")
    entry = stats["model_stats"][0]
    return int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0))


def check_output(server, model: str, expected) -> None:
    """One V2 JSON request with a fixed input: the server must compute what the model computes here."""
    import numpy as np

    x = loadgen.sample_array([1, FEATURES[model]], "FP32", seed=7)
    body = {"inputs": [{"name": "INPUT0", "shape": [1, FEATURES[model]], "datatype": "FP32",
                        "data": x.reshape(-1).tolist()}]}
    answer = pbc.http_json(server, "POST", f"/v2/models/{model}/infer", body, timeout=30)
    got = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(1, -1)
    if not np.allclose(got, expected(model, x), rtol=1e-3, atol=1e-3):
        raise RuntimeError(f"{server.name} {model}: wrong output {got.ravel()[:4]} vs {expected(model, x).ravel()[:4]}")


def wait_quiet(pgid: int, threshold: float, patience: float) -> float:
    """Until other processes use under `threshold` cores over one second (at most `patience` s); their cores."""
    deadline = time.monotonic() + patience
    while True:
        cpu0, busy0, own0, t0 = group_cpu_s(pgid), busy_s(), own_cpu_s(), time.monotonic()
        time.sleep(1.0)
        other = max(0.0, (busy_s() - busy0) - (group_cpu_s(pgid) - cpu0) - (own_cpu_s() - own0)) / (time.monotonic() - t0)
        if other < threshold or time.monotonic() > deadline:
            return other


def measure_point(server, pgid: int, kind: str, model: str, protocol: str, target, c: int, args) -> dict:
    inf0, exe0 = model_counts(server, model)
    cpu0, busy0, own0, t0 = group_cpu_s(pgid), busy_s(), own_cpu_s(), time.monotonic()
    if args.generator == "perf_analyzer":
        url = f"127.0.0.1:{server.grpc if protocol == 'grpc' else server.http}"
        result = loadgen.run_perf_analyzer(f"http://{url}", model, protocol, c, args.seconds, args.warmup)
    elif protocol == "grpc":
        result = loadgen.run_grpc(target, c, args.seconds, args.warmup)
    else:
        result = loadgen.run_builtin(target, c, args.seconds, args.warmup)
    cpu1, busy1, own1, t1 = group_cpu_s(pgid), busy_s(), own_cpu_s(), time.monotonic()
    inf1, exe1 = model_counts(server, model)
    # cores used by anything but the server and this load generator: other sessions' work (and some
    # kernel time no process is charged for)
    other = max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - (own1 - own0)) / (t1 - t0)
    inferences, executions = inf1 - inf0, exe1 - exe0
    if kind == "gpuserve" and args.gpuserve_workers > 1:
        # each worker counts its own: two reads of the statistics may come from two workers. Batches are
        # not known then, and the CPU is shared out over the requests the load generator counted.
        inferences, executions = result.requests, 0
    row = {"server": kind, "model": model, "protocol": protocol, "concurrency": c,
           "rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
           "requests": result.requests, "errors": result.errors, "error_sample": result.error_sample,
           "batch": inferences / executions if executions else float("nan"),
           "cpu_us_per_req": (cpu1 - cpu0) / inferences * 1e6 if inferences else float("nan"),
           "client_cores": (own1 - own0) / (t1 - t0), "server_cores": (cpu1 - cpu0) / (t1 - t0),
           "other_cores": other, "loadavg": os.getloadavg()[0]}
    print(f"  {kind:8} {model:5} {protocol:9} {result.line()}  batch {row['batch']:.2f}  "
          f"server cpu {row['cpu_us_per_req']:.0f} us/req  cores server/client/other "
          f"{row['server_cores']:.2f}/{row['client_cores']:.2f}/{other:.2f}", flush=True)
    return row


def measure_server(kind: str, work: Path, args, expected) -> List[dict]:
    print(f"[{kind}] load average {os.getloadavg()}", flush=True)
    server = start_server(kind, work, args.gpuserve_workers)
    rows = []
    try:
        pgid = server.proc.pid
        for model in args.models:
            check_output(server, model, expected)
            for protocol in args.protocols:
                base = f"http://127.0.0.1:{server.http}"
                name, shape, datatype, output = loadgen.model_io(base, model)
                url = f"grpc://127.0.0.1:{server.grpc}" if protocol == "grpc" else base
                target = loadgen.make_target(url, model, protocol, name, shape, datatype, output)
                status, body = loadgen.check_target(target)
                if status // 100 != 2:
                    raise RuntimeError(f"{kind} rejects the {protocol} request for {model}: {status} {body[:300]!r}")
                for c in args.concurrency:
                    for attempt in range(args.retries + 1):
                        wait_quiet(pgid, args.max_other / 2, args.quiet_wait)
                        row = measure_point(server, pgid, kind, model, protocol, target, c, args)
                        row["attempt"] = attempt
                        if row["other_cores"] <= args.max_other:
                            break
                        print(f"    other processes used {row['other_cores']:.2f} cores: measuring again", flush=True)
                    rows.append(row)
    finally:
        pbc.stop(server)
        pbc.clean_shm()
    return rows


# --------------------------------------------------------------------------------------------- limit

def load_models(repo: Path) -> Dict[str, object]:
    """The models' own TritonPythonModel objects in this process, pb_utils = gpuserve's stand-in."""
    import importlib.util

    from gpuserve import triton_pb_utils

    sys.modules["triton_python_backend_utils"] = triton_pb_utils
    objects = {}
    for name in MODEL_NAMES:
        spec = importlib.util.spec_from_file_location(f"pb_bench_{name}", repo / name / "1" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        obj = module.TritonPythonModel()
        if hasattr(obj, "initialize"):
            obj.initialize({"model_config": json.dumps({"name": name, "max_batch_size": 64}),
                            "model_instance_kind": "CPU", "model_instance_name": f"{name}_0",
                            "model_instance_device_id": "0", "model_repository": str(repo / name),
                            "model_version": "1", "model_name": name})
        objects[name] = obj
    return objects


def expected_fn(objects):
    from gpuserve import triton_pb_utils as pb

    def expected(model, x):
        model = CALLS_THE_SERVER.get(model, model)
        request = pb.InferenceRequest(model_name=model, requested_output_names=["OUTPUT0"],
                                       inputs=[pb.Tensor("INPUT0", x)])
        return objects[model].execute([request])[0].output_tensors()[0].as_numpy()

    return expected


def limit_rows(objects, sizes: Dict[str, List[int]], seconds: float) -> List[dict]:
    """execute(N requests of one row) back to back for `seconds`: rows/s and microseconds per execute."""
    from gpuserve import triton_pb_utils as pb

    rows = []
    for model, ns in sizes.items():
        obj = objects[model]
        for n in ns:
            requests = [pb.InferenceRequest(  # keywords, as Triton's pb_utils takes them
                model_name=model, requested_output_names=["OUTPUT0"],
                inputs=[pb.Tensor("INPUT0", loadgen.sample_array([1, FEATURES[model]], "FP32", seed=i))])
                for i in range(n)]
            for _ in range(3):
                obj.execute(requests)
            calls, begin = 0, time.perf_counter()
            while True:
                obj.execute(requests)
                calls += 1
                elapsed = time.perf_counter() - begin
                if elapsed >= seconds and calls >= 5:
                    break
            rows.append({"model": model, "n": n, "rows_per_s": n * calls / elapsed, "us_per_execute": elapsed / calls * 1e6})
            print(f"  limit {model:5} N={n:<3} {n * calls / elapsed:10.0f} rows/s  {elapsed / calls * 1e6:8.0f} us/execute",
                  flush=True)
    return rows


_NUMPY_ALONE = """
import json, sys, time
import numpy as np
rng = np.random.default_rng(1234)
w1 = (rng.standard_normal((256, 1024)) / 16).astype(np.float32)
w2 = (rng.standard_normal((1024, 1024)) / 32).astype(np.float32)
w3 = (rng.standard_normal((1024, 256)) / 32).astype(np.float32)
seconds = float(sys.argv[1]); out = {}
for n in [int(v) for v in sys.argv[2].split(",")]:
    x = rng.standard_normal((n, 256)).astype(np.float32)
    for _ in range(3):
        np.maximum(np.maximum(x @ w1, 0) @ w2, 0) @ w3
    calls, begin = 0, time.perf_counter()
    while True:
        np.maximum(np.maximum(x @ w1, 0) @ w2, 0) @ w3
        calls += 1
        elapsed = time.perf_counter() - begin
        if elapsed >= seconds and calls >= 5:
            break
    out[n] = n * calls / elapsed
print(json.dumps({"numpy": np.__version__, "rows_per_s": out}))
"""


def numpy_alone(python: Path, ns: List[int], seconds: float) -> Optional[dict]:
    """The heavy model's math alone in another interpreter (its own NumPy/OpenBLAS): rows/s per N."""
    if not python.exists():
        return None
    proc = subprocess.run([str(python), "-c", _NUMPY_ALONE, str(seconds), ",".join(map(str, ns))],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, **BLAS_ENV))
    if proc.returncode != 0:
        print(f"  numpy alone with {python} failed: {proc.stderr[-400:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------------------------- report

def span(values, fmt="{:.0f}") -> str:
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def render(data: dict) -> str:
    rows, lines = data["rows"], []
    rounds = sorted({r["round"] for r in rows})
    lines.append(f"Ranges over {len(rounds)} round(s) (min-max); ratio = gpuserve req/s / Triton req/s, per round. "
                 "batch = mean requests per execute; cpu = server process group CPU us per request; server cores = "
                 "its CPU seconds per second.")
    lines.append("")
    lines.append("| model | protocol | c | gpuserve req/s | Triton req/s | ratio | gpuserve p50 / p99 ms | "
                 "Triton p50 / p99 ms | batch gpuserve / Triton | cpu us/req gpuserve / Triton | server cores gpuserve / Triton |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    keys = []
    for r in rows:
        key = (r["model"], r["protocol"], r["concurrency"])
        if key not in keys:
            keys.append(key)
    for model, protocol, c in keys:
        pick = lambda server: [r for r in rows if (r["server"], r["model"], r["protocol"], r["concurrency"])  # noqa: E731
                               == (server, model, protocol, c)]
        ours, theirs = pick("gpuserve"), pick("triton")
        ratios = []
        for rnd in rounds:
            a = [r["rps"] for r in ours if r["round"] == rnd]
            b = [r["rps"] for r in theirs if r["round"] == rnd]
            if a and b and b[0]:
                ratios.append(a[0] / b[0])
        errors = sum(r["errors"] for r in ours + theirs)
        lines.append(
            f"| {model} | {protocol} | {c} | {span([r['rps'] for r in ours])} | {span([r['rps'] for r in theirs])} | "
            f"{span(ratios, '{:.2f}')} | {span([r['p50_ms'] for r in ours], '{:.2f}')} / "
            f"{span([r['p99_ms'] for r in ours], '{:.1f}')} | {span([r['p50_ms'] for r in theirs], '{:.2f}')} / "
            f"{span([r['p99_ms'] for r in theirs], '{:.1f}')} | {span([r['batch'] for r in ours], '{:.1f}')} / "
            f"{span([r['batch'] for r in theirs], '{:.1f}')} | {span([r['cpu_us_per_req'] for r in ours])} / "
            f"{span([r['cpu_us_per_req'] for r in theirs])} | {span([r.get('server_cores', float('nan')) for r in ours], '{:.2f}')}"
            f" / {span([r.get('server_cores', float('nan')) for r in theirs], '{:.2f}')} |" + (f" errors {errors}" if errors else ""))
    again = sum(1 for r in rows if r.get("attempt"))
    if again:
        lines += ["", f"{again} point(s) were measured again because other processes used > the --max-other cores."]
    other = [r.get("other_cores", float("nan")) for r in rows]
    if any(v == v for v in other):
        lines += ["", f"Cores used by other processes during the points (neither server nor load generator): "
                      f"median {statistics.median(v for v in other if v == v):.2f}, max {max(v for v in other if v == v):.2f}."]
    if data.get("limit"):
        lines += ["", "In-process limit (this process, gpuserve's .venv NumPy; execute on N prepared one-row requests; "
                      f"ranges over {len({r.get('round', 0) for r in data['limit']})} pass(es)):",
                  "", "| model | N | rows/s | us per execute |", "|---|---:|---:|---:|"]
        for model, n in sorted({(r["model"], r["n"]) for r in data["limit"]}, key=lambda k: (MODEL_NAMES.index(k[0]), k[1])):
            pick = [r for r in data["limit"] if (r["model"], r["n"]) == (model, n)]
            lines.append(f"| {model} | {n} | {span([r['rows_per_s'] for r in pick])} | "
                         f"{span([r['us_per_execute'] for r in pick])} |")
    alone = data.get("numpy_alone") or []
    if isinstance(alone, dict):  # an older file: one pass
        alone = [dict(v, venv=k) for k, v in alone.items() if v]
    if alone:
        ns = sorted({int(n) for v in alone for n in v["rows_per_s"]})
        lines += ["", "heavy's math alone (the three matmuls, no pb_utils), rows/s, per venv:", "",
                  "| venv (NumPy) | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]
        for venv in dict.fromkeys(v["venv"] for v in alone):
            picks = [v for v in alone if v["venv"] == venv]
            lines.append(f"| {venv} ({picks[0]['numpy']}) | " + " | ".join(
                span([v["rows_per_s"].get(str(n), v["rows_per_s"].get(n, float("nan"))) for v in picks]) for n in ns)
                + " |")
    if data.get("limit_other_cores"):
        lines += ["", "Cores used by other processes during the limit passes: "
                      + ", ".join(f"{v:.2f}" for v in data["limit_other_cores"]) + "."]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main

def take_lock():
    handle = open(LOCK, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"waiting for {LOCK} (another benchmark holds it) ...", flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": cpu, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "blas_env": BLAS_ENV}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, c=1,32, 1 s a point")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, server order alternating (default 2)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds a point (default 4)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds a point (default 1)")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--servers", default="triton,gpuserve", help="which servers (default both)")
    parser.add_argument("--generator", choices=("builtin", "perf_analyzer"), default="builtin",
                        help="the load: loadgen's Python generators, or Triton's perf_analyzer (C++: random inputs "
                             "from the model's metadata, async above one client; scripts/install_perf_analyzer.sh)")
    parser.add_argument("--gpuserve-workers", type=int, default=1,
                        help="gpuserve start --workers N (batch sizes then unknown: each worker counts its own)")
    parser.add_argument("--max-other", type=float, default=0.3,
                        help="measure a point again when other processes used more cores than this (default 0.3)")
    parser.add_argument("--retries", type=int, default=2, help="at most this many re-measurements a point")
    parser.add_argument("--quiet-wait", type=float, default=90.0,
                        help="before a point, wait up to this many seconds for other processes to go quiet")
    parser.add_argument("--limit-seconds", type=float, default=1.5, help="seconds per in-process limit point")
    parser.add_argument("--json", type=Path, default=None,
                        help="write every row here (default benchmarks/results/python_backend_bench.json)")
    parser.add_argument("--keep", type=Path, default=None, help="keep repositories and server logs in this folder")
    parser.add_argument("--render", type=Path, default=None, help="print the tables of a JSON file and exit")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.limit_seconds = 1, 1.0, 0.3, 0.3
        args.concurrency = "1,32"
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.models = [m for m in args.models.split(",") if m]
    args.protocols = [p for p in args.protocols.split(",") if p]
    servers = [s for s in args.servers.split(",") if s]
    json_path = args.json or RESULTS / ("python_backend_bench.quick.json" if args.quick else "python_backend_bench.json")

    lock = take_lock()
    work = args.keep or Path(tempfile.mkdtemp(prefix="pb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine(), "command": " ".join([Path(sys.executable).name] + sys.argv), "rows": [],
            "loadavg_start": os.getloadavg()}
    print(f"{data['machine']}  load average {data['loadavg_start']}", flush=True)
    objects = load_models(write_repository(work / "limit-repo"))
    expected = expected_fn(objects)
    try:
        for rnd in range(args.rounds):
            order = servers if rnd % 2 == 0 else servers[::-1]
            print(f"round {rnd + 1}/{args.rounds}: {' then '.join(order)}", flush=True)
            for kind in order:
                for row in measure_server(kind, work, args, expected):
                    row["round"] = rnd
                    data["rows"].append(row)
        sizes = {}
        for model in [m for m in args.models if m not in CALLS_THE_SERVER]:  # N = 1 and gpuserve's mean batch
            # per point (median over rounds), rounded
            points = {(r["protocol"], r["concurrency"]) for r in data["rows"] if r["model"] == model}
            seen = [[r["batch"] for r in data["rows"] if r["server"] == "gpuserve"
                     and (r["model"], r["protocol"], r["concurrency"]) == (model, *point) and r["batch"] == r["batch"]]
                    for point in points]
            formed = [statistics.median(batches) for batches in seen if batches]
            sizes[model] = sorted({1} | {max(1, round(b)) for b in formed})
        data["limit"], data["numpy_alone"] = [], []
        for rep in range(max(1, args.rounds)):  # as many passes as rounds: ranges, like the servers'
            wait_quiet(-1, args.max_other / 2, args.quiet_wait)
            print(f"in-process limit, pass {rep + 1} (load average {os.getloadavg()}) ...", flush=True)
            other0, own0, t0 = busy_s(), own_cpu_s(), time.monotonic()
            for row in limit_rows(objects, sizes, args.limit_seconds):
                data["limit"].append(dict(row, round=rep))
            if "heavy" in sizes:
                for venv, python in (("gpuserve .venv", Path(sys.executable)), ("Triton .peers/triton", TRITON_PYTHON)):
                    alone = numpy_alone(python, sizes["heavy"], args.limit_seconds)
                    if alone:
                        data["numpy_alone"].append(dict(alone, venv=venv, round=rep))
            other = max(0.0, (busy_s() - other0) - (own_cpu_s() - own0)) / (time.monotonic() - t0)
            data.setdefault("limit_other_cores", []).append(other)
            print(f"  cores used by other processes meanwhile: {other:.2f}", flush=True)
    finally:
        data["loadavg_end"] = os.getloadavg()
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(data, indent=1))
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(render(data))
    print(f"\nrows in {json_path}; load average at the end {data['loadavg_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
