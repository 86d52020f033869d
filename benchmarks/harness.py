"""Shared pieces of the HTTP benchmarks: server processes, the model set, the sweep, CSV/Markdown/plot
output and the in-process onnxruntime limit. Used by run_http.py, peers/*.py and compare.py."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PEERS_DIR = ROOT / ".peers"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402

ORT_THREADS = 2  # intra_op_num_threads for every server and the in-process limit

FIELDS = ["server", "model", "protocol", "generator", "concurrency", "seconds", "rps", "p50_ms", "p90_ms",
          "p99_ms", "mean_ms", "max_ms", "requests", "errors", "batches", "mean_batch", "limit_rps",
          "server_cores", "gen_cores", "other_cores", "note"]


# --------------------------------------------------------------------------------------------- models

@dataclasses.dataclass
class ModelSpec:
    """A benchmark model; feature counts and tensor names are read from the built ONNX file."""

    name: str
    builder: str
    in_features: int = 0
    out_features: int = 0
    input_name: str = "input"
    output_name: str = "output"

    def path(self, root: Path = RESULTS / "models") -> Path:
        return root / self.name / "model.onnx"

    def describe(self) -> str:
        return f"{self.name} ({self.in_features}->...->{self.out_features})"


# models.small_mlp_onnx (issue 8: 64 -> 256 -> 10) and models.mlp_onnx(width=1024, layers=3, in_features=1024)
SMALL = ModelSpec("small", "small_mlp_onnx")
HEAVY = ModelSpec("mlp", "mlp_onnx")
MODELS = {m.name: m for m in (SMALL, HEAVY)}


def _read_io(spec: ModelSpec, path: Path) -> None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    first = [i for i in graph.input if i.name not in inits][0]
    out = graph.output[0]
    spec.input_name, spec.output_name = first.name, out.name
    spec.in_features = first.type.tensor_type.shape.dim[-1].dim_value
    spec.out_features = out.type.tensor_type.shape.dim[-1].dim_value


def build_models(root: Path = RESULTS / "models", rebuild: bool = True) -> Dict[str, Path]:
    """The benchmark ONNX files, built fresh from models.py (the same bytes for every server)."""
    import models

    paths = {}
    for spec in MODELS.values():
        path = spec.path(root)
        if rebuild or not path.exists():
            if spec.builder == "mlp_onnx":
                models.mlp_onnx(path, width=1024, layers=3, in_features=1024)
            else:
                getattr(models, spec.builder)(path)
        _read_io(spec, path)
        paths[spec.name] = path
    return paths


@dataclasses.dataclass(frozen=True)
class Case:
    model: ModelSpec
    protocol: str

    def target(self, base_url: str, rows: int = 1) -> loadgen.Target:
        return loadgen.make_target(base_url, self.model.name, self.protocol, self.model.input_name,
                                   [rows, self.model.in_features], "FP32", self.model.output_name)


def cases(models: Iterable[str], protocols: Iterable[str], supported: Sequence[str]) -> List[Case]:
    return [Case(MODELS[m], p) for m in models for p in protocols if p in supported]


# --------------------------------------------------------------------------------------------- processes

def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ServerProcess:
    """A server in its own session (process group): started, awaited, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, cmd: List[str], log: Path, env: Optional[Dict[str, str]] = None,
                 cwd: Optional[Path] = None):
        self.name, self.cmd, self.log, self.cwd = name, cmd, log, cwd
        self.env = dict(os.environ, **(env or {}))
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "ServerProcess":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=self.cwd, start_new_session=True)
        return self

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, urls: Sequence[str], timeout: float = 180.0) -> float:
        """Poll each URL until it answers 200; raise (with the log tail) on timeout or early exit."""
        start = time.monotonic()
        pending = list(urls)
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before ready:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(pending[0], timeout=2) as response:
                    if response.status == 200:
                        pending.pop(0)
                        continue
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() - start > timeout:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s ({pending[0]}):\n{self.log_tail()}")
            time.sleep(0.25)
        return time.monotonic() - start

    def stop(self, grace: float = 20.0) -> Optional[int]:
        """SIGTERM to the server's process group, SIGKILL after `grace` seconds."""
        if self.proc is None:
            return None
        family = [p for p in tree_pids(self.proc.pid) if p != self.proc.pid]
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        # children that outlived the leader (worker processes) go with the group; descendants that made
        # their own session (pytriton's tritonserver) are killed by pid, once their parent is gone
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + grace
        for pid in family:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


free_port = loadgen.free_port


# --------------------------------------------------------------------------------------------- progress

class Progress:
    """tqdm when importable, else a one-line bar on stderr."""

    def __init__(self, total: int, desc: str = ""):
        self.total, self.done, self.desc = max(total, 1), 0, desc
        try:
            from tqdm import tqdm  # type: ignore

            self.bar = tqdm(total=total, desc=desc, unit="pt", dynamic_ncols=True)
        except ImportError:
            self.bar = None
        self.start = time.monotonic()

    def update(self, label: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(label[:110])
            self.bar.update(1)
            return
        if not sys.stderr.isatty():
            sys.stderr.write(f"{self.desc} {self.done}/{self.total} {label}\n")
            return
        width = 30
        filled = int(width * self.done / self.total)
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        sys.stderr.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                         f"{elapsed:4.0f}s eta {eta:4.0f}s {label[:50]:<50}")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            sys.stderr.write(("\r" + " " * 120 + "\r" if sys.stderr.isatty() else "") + text + "\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------------------------- CPU accounting

_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_seconds() -> float:
    """CPU seconds all cores spent not idle (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    return (sum(v[:8]) - v[3] - v[4]) / _CLK


def _proc_table() -> Dict[int, tuple]:
    """pid -> (ppid, pgid, utime + stime ticks) of every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]))
    return table


def tree_pids(root: int, table: Optional[Dict[int, tuple]] = None) -> List[int]:
    """`root`, its descendants (servers that start their own sessions, like pytriton's tritonserver, stay
    in the tree) and the members of its process group."""
    table = table if table is not None else _proc_table()
    children: Dict[int, List[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid in found:
            continue
        found.add(pid)
        stack.extend(children.get(pid, []))
    found |= {pid for pid, (_, pgid, _) in table.items() if pgid == root}
    return sorted(p for p in found if p in table)


def _group_seconds(root: Optional[int]) -> float:
    """CPU seconds of the live processes of one server (its process tree and group)."""
    if root is None:
        return float("nan")
    table = _proc_table()
    return sum(table[p][2] for p in tree_pids(root, table)) / _CLK


def _own_seconds() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class CpuMeter:
    """Cores used during a point by the server's process group, by this process and the generators it
    ran (hey/wrk are waited children), and by everything else on the machine (other people's work)."""

    def __init__(self, pgid: Optional[int]):
        self.pgid = pgid
        self.t, self.busy, self.server, self.own = time.monotonic(), _busy_seconds(), _group_seconds(pgid), _own_seconds()

    def read(self) -> Dict[str, float]:
        dt = max(time.monotonic() - self.t, 1e-6)
        busy = (_busy_seconds() - self.busy) / dt
        server = (_group_seconds(self.pgid) - self.server) / dt
        own = (_own_seconds() - self.own) / dt
        return {"server_cores": server, "gen_cores": own, "other_cores": max(busy - server - own, 0.0)}


# --------------------------------------------------------------------------------------------- sweep

def batch_counts(base_url: str, model: str) -> Optional[Dict[int, int]]:
    """{batch size: executions} from GET /v2/models/NAME/stats (Triton's statistics extension)."""
    try:
        with urllib.request.urlopen(f"{base_url}/v2/models/{model}/stats", timeout=5) as response:
            stats = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    counts: Dict[int, int] = {}
    for entry in stats.get("model_stats", []):
        for b in entry.get("batch_stats", []) or []:
            infer = b.get("compute_infer", {})
            counts[int(b["batch_size"])] = counts.get(int(b["batch_size"]), 0) + int(infer.get("count", 0))
    return counts


def _diff(after: Optional[Dict[int, int]], before: Optional[Dict[int, int]]) -> Dict[int, int]:
    if after is None:
        return {}
    before = before or {}
    return {b: n - before.get(b, 0) for b, n in sorted(after.items()) if n - before.get(b, 0) > 0}


def format_batches(hist: Dict[int, int]) -> str:
    return " ".join(f"{b}:{n}" for b, n in sorted(hist.items()))


def parse_batches(text: str) -> Dict[int, int]:
    out = {}
    for item in (text or "").split():
        b, n = item.split(":")
        out[int(b)] = int(n)
    return out


def _point(server, base_url, case, target, c, generator, seconds, warmup, batch_stats, pgid):
    before = batch_counts(base_url, case.model.name) if batch_stats else None
    meter = CpuMeter(pgid)
    try:
        result = loadgen.run(generator, target, c, seconds, warmup)
        note = result.error_sample[:300]
    except Exception as exc:  # a generator failing is a row, not the end of the run
        result = loadgen.Result(generator, target.url, c, seconds, error_sample=str(exc))
        note = f"generator failed: {exc}"[:300]
    cpu = meter.read()
    hist = _diff(batch_counts(base_url, case.model.name), before) if batch_stats else {}
    executions = sum(hist.values())
    row = dict(server=server, model=case.model.name, protocol=case.protocol, generator=generator,
               concurrency=c, seconds=seconds, rps=result.rps, p50_ms=result.p50_ms, p90_ms=result.p90_ms,
               p99_ms=result.p99_ms, mean_ms=result.mean_ms, max_ms=result.max_ms,
               requests=result.requests, errors=result.errors, batches=format_batches(hist),
               mean_batch=(sum(b * n for b, n in hist.items()) / executions) if executions else "",
               note=note, **cpu)
    return row, result, cpu


def sweep(server: str, base_url: str, case_list: Sequence[Case], concurrency: Sequence[int], generator: str,
          seconds: float, warmup: float = 0.5, progress: Optional[Progress] = None,
          batch_stats: bool = False, pgid: Optional[int] = None, max_other: Optional[float] = None,
          retries: int = 0, grpc_url: Optional[str] = None) -> List[dict]:
    """Every case at every concurrency through one generator; one row per point. A point during which
    processes outside the benchmark used more than `max_other` cores is run again (up to `retries`
    times) and the quietest attempt kept."""
    rows = []
    for case in case_list:
        if case.protocol == "grpc" and not grpc_url:
            continue
        target = case.target(grpc_url if case.protocol == "grpc" else base_url)
        status, body = loadgen.check_target(target)
        if status // 100 != 2:
            note = f"rejected: HTTP {status}: {body[:300].decode('utf-8', 'replace')}"
            msg = f"{server} {case.model.name} {case.protocol}: {note}"
            (progress.write(msg) if progress else print(msg, file=sys.stderr))
            for c in concurrency:
                rows.append(dict(server=server, model=case.model.name, protocol=case.protocol, generator=generator,
                                 concurrency=c, seconds=seconds, rps=0.0, errors=1, note=note))
                if progress:
                    progress.update(f"{server} {case.model.name} {case.protocol} c={c} rejected")
            continue
        for c in concurrency:
            best = None
            for attempt in range(retries + 1):
                row, result, cpu = _point(server, base_url, case, target, c, generator, seconds, warmup,
                                          batch_stats, pgid)
                if best is None or cpu["other_cores"] < best[2]["other_cores"]:
                    best = (row, result, cpu)
                if max_other is None or cpu["other_cores"] <= max_other:
                    break
                if attempt < retries:
                    msg = (f"{server} {case.model.name} {case.protocol} c={c}: {cpu['other_cores']:.2f} cores used "
                           f"outside the benchmark; again")
                    (progress.write(msg) if progress else print(msg, file=sys.stderr))
            row, result, cpu = best
            if attempt:
                row["note"] = (f"best of {attempt + 1} attempts (other load) " + row["note"]).strip()
            rows.append(row)
            label = (f"{server} {case.model.name} {case.protocol} c={c}: {result.rps:.0f}/s p99 {result.p99_ms:.1f}ms "
                     f"cores: server {cpu['server_cores']:.2f} gen {cpu['gen_cores']:.2f} other {cpu['other_cores']:.2f}")
            if progress:
                progress.update(label)
            else:
                print(label, file=sys.stderr)
    return rows


# --------------------------------------------------------------------------------------------- in-process limit

def ort_session(path: Path, threads: int = ORT_THREADS):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def batch_seconds(session, spec: ModelSpec, batch: int, budget: float = 0.3, min_iters: int = 5) -> float:
    """Median seconds of one direct session.run at this batch size."""
    import numpy as np

    x = np.random.default_rng(0).normal(size=(batch, spec.in_features)).astype(np.float32)
    feed = {spec.input_name: x}
    for _ in range(2):
        session.run(None, feed)
    times, start = [], time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
        if len(times) > 20000:
            break
    times.sort()
    return times[len(times) // 2]


class Limit:
    """The in-process onnxruntime call (same threads and spinning setting as the servers): rows/s at
    batch 1 and at a histogram of batch sizes, measured once per (model, batch size)."""

    def __init__(self, paths: Dict[str, Path]):
        self.paths = paths
        self.sessions: Dict[str, object] = {}
        self.cache: Dict[tuple, float] = {}

    def seconds(self, model: str, batch: int) -> float:
        key = (model, batch)
        if key not in self.cache:
            if model not in self.sessions:
                self.sessions[model] = ort_session(self.paths[model])
            self.cache[key] = batch_seconds(self.sessions[model], MODELS[model], batch)
        return self.cache[key]

    def rows_per_s(self, model: str, hist: Dict[int, int]) -> float:
        """Rows/s if every batch of this histogram ran back to back, with nothing else."""
        rows = sum(b * n for b, n in hist.items())
        busy = sum(n * self.seconds(model, b) for b, n in hist.items())
        return rows / busy if busy else float("nan")


def add_limits(rows: List[dict], paths: Dict[str, Path], server: str = "gpuserve") -> List[dict]:
    """Fill `limit_rps` of `server`'s rows from their batch histograms; return extra `in-process` rows
    (batch 1 and each point's formed batches) for the table."""
    limit = Limit(paths)
    extra = []
    for model in sorted({r["model"] for r in rows if r["server"] == server}):
        b1 = 1.0 / limit.seconds(model, 1)
        extra.append(dict(server="in-process", model=model, protocol="ort-b1", generator="direct", concurrency=1,
                          rps=b1, p50_ms=limit.seconds(model, 1) * 1e3, batches="1:*", mean_batch=1,
                          note="onnxruntime session.run at batch 1"))
    seen = set()
    for row in rows:
        if row["server"] != server or not row.get("batches"):
            continue
        hist = parse_batches(row["batches"])
        row["limit_rps"] = limit.rows_per_s(row["model"], hist)
        key = (row["model"], row["concurrency"])
        if key in seen:
            continue
        seen.add(key)
        extra.append(dict(server="in-process", model=row["model"], protocol="ort-formed", generator="direct",
                          concurrency=row["concurrency"], rps=row["limit_rps"], batches=row["batches"],
                          mean_batch=row["mean_batch"],
                          note=f"session.run at the batch sizes gpuserve formed ({row['protocol']})"))
    return extra


# --------------------------------------------------------------------------------------------- output

def write_csv(rows: List[dict], path: Path, replace_servers: Optional[Iterable[str]] = None) -> Path:
    """Write rows; with `replace_servers`, keep the file's rows of other servers (one CSV, many scripts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = []
    if replace_servers is not None and path.exists():
        drop = set(replace_servers)
        with open(path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if r.get("server") not in drop]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in kept + rows:
            writer.writerow({k: _fmt(row.get(k, "")) for k in FIELDS})
    return path


def read_csv(path: Path) -> List[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms", "seconds", "limit_rps", "mean_batch",
                    "server_cores", "gen_cores", "other_cores"):
            row[key] = _num(row.get(key))
        for key in ("concurrency", "requests", "errors"):
            value = _num(row.get(key))
            row[key] = int(value) if not math.isnan(value) else 0
    return rows


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return value


def _cell(value, digits: int = 1) -> str:
    value = _num(value)
    return "—" if math.isnan(value) else f"{value:,.{digits}f}"


def _cores(row) -> str:
    values = [_num(row.get(k)) for k in ("server_cores", "gen_cores", "other_cores")]
    return "—" if any(math.isnan(v) for v in values) else "/".join(f"{v:.2f}" for v in values)


SERVER_ORDER = ["gpuserve", "triton", "mlserver", "mlserver-nobatch", "kserve", "in-process"]


def _order(server: str) -> int:
    return SERVER_ORDER.index(server) if server in SERVER_ORDER else len(SERVER_ORDER)


def markdown(rows: List[dict], reference: str = "gpuserve") -> str:
    """One table per (model, protocol): server x concurrency -> req/s, p50, p99, and `reference`'s
    req/s and p99 ratio to each other server at the same concurrency; gpuserve % of the in-process
    limit at the batch sizes it formed."""
    rows = [dict(r) for r in rows]
    for r in rows:
        for key in ("rps", "p50_ms", "p99_ms", "limit_rps", "mean_batch"):
            r[key] = _num(r.get(key))
    out = []
    groups = sorted({(r["model"], r["protocol"]) for r in rows if r["server"] != "in-process"})
    for model, protocol in groups:
        group = [r for r in rows if r["model"] == model and r["protocol"] == protocol]
        ref = {int(r["concurrency"]): r for r in group if r["server"] == reference}
        spec = MODELS.get(model)
        title = spec.describe() if spec and spec.in_features else model
        out.append(f"#### {title}, {protocol}, batch-1 requests\n")
        out.append(f"| server | conc | req/s | p50 ms | p99 ms | {reference} req/s ÷ this | {reference} p99 ÷ this | "
                   "mean batch | cores server/gen/other | errors | note |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
        for r in sorted(group, key=lambda r: (_order(r["server"]), r["server"], int(r["concurrency"]))):
            c = int(r["concurrency"])
            ratio = p99_ratio = "—"
            mine = ref.get(c)
            if r["server"] == reference:
                if not math.isnan(r["limit_rps"]):
                    ratio = f"{r['rps'] / r['limit_rps']:.0%} of limit"
            elif mine is not None and r["rps"] > 0:
                ratio = f"{mine['rps'] / r['rps']:.2f}x"
                if r["p99_ms"] > 0 and not math.isnan(r["p99_ms"]):
                    p99_ratio = f"{mine['p99_ms'] / r['p99_ms']:.2f}x"
            note = str(r.get("note") or "").replace("|", "/").replace("\n", " ")[:90]
            out.append(f"| {r['server']} | {c} | {_cell(r['rps'])} | {_cell(r['p50_ms'], 2)} | {_cell(r['p99_ms'], 2)} | "
                       f"{ratio} | {p99_ratio} | {_cell(r['mean_batch'], 1)} | {_cores(r)} | {int(_num(r.get('errors')) or 0)} | {note} |")
        out.append("")
    limits = [r for r in rows if r["server"] == "in-process"]
    if limits:
        out.append("#### In-process limit (onnxruntime session.run, intra_op_num_threads=2, no server, no client)\n")
        out.append("| model | what | conc of the point | rows/s | batches formed (size:count) |")
        out.append("|---|---|---:|---:|---|")
        for r in sorted(limits, key=lambda r: (r["model"], r["protocol"] != "ort-b1", int(r["concurrency"]))):
            what = "batch 1" if r["protocol"] == "ort-b1" else "gpuserve's formed batches"
            batches = str(r.get("batches", ""))
            batches = batches if len(batches) < 80 else batches[:77] + "..."
            out.append(f"| {r['model']} | {what} | {int(r['concurrency'])} | {_cell(r['rps'])} | {batches} |")
        out.append("")
    return "\n".join(out)


def bench_python() -> Optional[str]:
    """A Python with matplotlib: this one, else the bench venv made by peers/setup.sh."""
    try:
        import matplotlib  # noqa: F401

        return sys.executable
    except ImportError:
        candidate = PEERS_DIR / "bench" / "bin" / "python"
        return str(candidate) if candidate.exists() else None


def plot(csv_path: Path, png_path: Path) -> Optional[Path]:
    python = bench_python()
    if python is None:
        print("no matplotlib (run: bash benchmarks/peers/setup.sh bench); plot skipped", file=sys.stderr)
        return None
    proc = subprocess.run([python, str(HERE / "plot.py"), str(csv_path), str(png_path)], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        print(f"plot failed: {proc.stderr[-400:]}", file=sys.stderr)
        return None
    return png_path


def machine() -> str:
    import platform

    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{platform.machine()}, nproc {os.cpu_count()} (affinity {len(os.sched_getaffinity(0))}), {model}"


def gpuserve_bin() -> str:
    candidate = ROOT / ".venv" / "bin" / "gpuserve"
    return str(candidate) if candidate.exists() else (shutil.which("gpuserve") or "gpuserve")


# --------------------------------------------------------------------------------------------- one server, end to end

@dataclasses.dataclass
class Launch:
    """What a server script hands the runner: the started process, its base URL, readiness URLs, and
    its gRPC address (grpc://127.0.0.1:PORT) for the `grpc` protocol."""

    process: ServerProcess
    base_url: str
    ready_urls: List[str]
    grpc_url: Optional[str] = None


def add_common_args(parser, protocols: Sequence[str] = ("v2-json",)) -> None:
    parser.add_argument("--models", default="small,mlp", help="comma list of: " + ",".join(MODELS))
    parser.add_argument("--protocols", default=",".join(protocols), help="comma list of: " + ",".join(loadgen.PROTOCOLS))
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each point")
    parser.add_argument("--generator", default="builtin", choices=loadgen.GENERATORS)
    parser.add_argument("--csv", type=Path, default=RESULTS / "http.csv")
    parser.add_argument("--max-other", type=float, default=0.3,
                        help="rerun a point when processes outside the benchmark used more cores than this")
    parser.add_argument("--retries", type=int, default=1, help="reruns of a noisy point (keeps the quietest)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI mode: small model, v2-json, concurrency 1,8, 1 s points")


def settle_args(args) -> None:
    if args.smoke:
        args.models, args.protocols, args.concurrency, args.seconds, args.warmup = "small", "v2-json", "1,8", 1.0, 0.2
        args.retries = 0
    args.model_list = [m for m in args.models.split(",") if m]
    args.protocol_list = [p for p in args.protocols.split(",") if p]
    args.concurrency_list = [int(c) for c in args.concurrency.split(",") if c]
    if args.generator != "builtin" and args.generator not in loadgen.available_generators():
        raise SystemExit(f"{args.generator} is not on PATH; available: {', '.join(loadgen.available_generators())}")


def run_server(server: str, launcher: Callable[[Dict[str, Path], Path], Launch], supported: Sequence[str], args,
               paths: Dict[str, Path], progress: Optional[Progress] = None, batch_stats: bool = False) -> List[dict]:
    """Start, wait ready, sweep, stop (SIGTERM then SIGKILL): the rows of one server."""
    work = RESULTS / "servers" / server
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    case_list = cases(args.model_list, args.protocol_list, supported)
    launch = launcher(paths, work)
    say = progress.write if progress else (lambda m: print(m, file=sys.stderr))
    try:
        ready_s = launch.process.wait_ready(launch.ready_urls)
        say(f"{server}: ready in {ready_s:.1f} s at {launch.base_url} (log {launch.process.log})")
        rows = sweep(server, launch.base_url, case_list, args.concurrency_list, args.generator, args.seconds,
                     args.warmup, progress, batch_stats, pgid=launch.process.proc.pid, max_other=args.max_other,
                     retries=args.retries, grpc_url=launch.grpc_url)
    finally:
        code = launch.process.stop()
        say(f"{server}: stopped (exit {code})")
    return rows


def skipped_rows(server: str, args, supported: Sequence[str], reason: str) -> List[dict]:
    return [dict(server=server, model=c.model.name, protocol=c.protocol, generator=args.generator, concurrency=k,
                 rps=0.0, errors=0, note=f"not run: {reason}"[:300])
            for c in cases(args.model_list, args.protocol_list, supported) for k in args.concurrency_list]


def peer_main(server_names: Sequence[str], launchers: Dict[str, Callable], supported: Sequence[str],
              available: Callable[[], Optional[str]], doc: str) -> int:
    """The command line every peer script shares: run the sweep for this peer, merge rows into the CSV."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    args = parser.parse_args()
    settle_args(args)
    missing = available()
    if missing:
        print(f"{server_names[0]}: {missing}", file=sys.stderr)
        return 1
    paths = build_models()
    total = sum(len(cases(args.model_list, args.protocol_list, supported)) * len(args.concurrency_list)
                for _ in server_names)
    progress = Progress(total, "+".join(server_names))
    rows = []
    for name in server_names:
        rows += run_server(name, launchers[name], supported, args, paths, progress)
    progress.close()
    write_csv(rows, args.csv, replace_servers=server_names)
    print(markdown(rows))
    print(f"rows merged into {args.csv}")
    return 0
