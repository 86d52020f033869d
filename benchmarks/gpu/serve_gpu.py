"""gpuserve over the network on a GPU (issues 5, 6, 8): what a user's load generator sees.

Starts `gpuserve start REPO` on a repository of two torch.export models of the issue's 1024x3 MLP on
cuda:0 (`mlp` eager, `mlp-graphs` with CUDA graphs) and, where onnxruntime-gpu came along, the ONNX MLP on
ONNX Runtime's CUDA provider (`mlp-onnx`), drives each with the built-in closed-loop generator
over V2 binary HTTP and over gRPC at 1, 16 and 64 concurrent clients (one row a request), and measures in
the same run the in-process limits: the module called directly at batch 1 and at the batch size the
server formed most (read from the server's statistics). Before and after the load, 64 concurrent clients
send distinct rows and every answer is compared with the module on the CPU (concurrent graph replays or
streams mixing requests would show there). A run with errors or no answers (the first H200 run,
2026-12-04: 41 requests unanswered at 64 clients with CUDA graphs, then none over gRPC) gets every server
thread's stack (SIGUSR1) and the server log printed, and the model's higher levels are skipped. Run by
verify_all.sh; prints a JSON line per point and a summary.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import loadgen  # noqa: E402  (benchmarks/ is on the path)
from harness import ServerProcess, batch_counts, free_port  # noqa: E402
from models import export_torch, mlp_onnx, torch_mlp  # noqa: E402

FEATURES = 1024


def repository(root: Path, device: str) -> dict:
    """model name -> its reference: rows -> outputs, computed on the CPU."""
    net = torch_mlp(FEATURES)
    for name, extra in (("mlp", {}), ("mlp-graphs", {"cuda_graphs": True})):
        folder = root / name
        folder.mkdir(parents=True)
        export_torch(net, FEATURES, folder / "model.pt2")
        (folder / "model-settings.json").write_text(json.dumps({
            "implementation": "torch", "device": device, "max_batch_size": 64,
            "parameters": {"uri": "model.pt2", "extra": extra}}))

    def torch_reference(rows):
        with torch.inference_mode():
            return net.to("cpu")(torch.from_numpy(rows)).numpy()

    references = {"mlp": torch_reference, "mlp-graphs": torch_reference}
    onnx_session = _onnx_reference(root / "mlp-onnx", device)
    if onnx_session is not None:
        references["mlp-onnx"] = lambda rows: onnx_session.run(None, {"input": rows})[0]
    return references


def _onnx_reference(folder: Path, device: str):
    """ONNX Runtime's CUDA provider served as `mlp-onnx` (needs onnxruntime-gpu: benchmarks/gpu/fetch_ort_gpu.sh;
    on `--device cpu` the CPU one, for a smoke run); its CPU session is the reference. None: not served."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if device != "cpu" and "CUDAExecutionProvider" not in ort.get_available_providers():
        print(json.dumps({"model": "mlp-onnx", "skipped": f"onnxruntime {ort.__version__} has no CUDA provider"}),
              flush=True)
        return None
    folder.mkdir(parents=True)
    path = mlp_onnx(folder / "model.onnx", width=FEATURES, in_features=FEATURES)
    (folder / "model-settings.json").write_text(json.dumps({
        "implementation": "onnx", "device": device, "max_batch_size": 64,
        # exact FP32, as the CPU reference computes it (ORT's CUDA provider defaults to TF32 GEMMs on Hopper)
        "parameters": {"uri": "model.onnx", "extra": {"provider_options": {"cuda": {"use_tf32": False}}}}}))
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def direct_rows_s(module, rows: int, seconds: float, device: str) -> float:
    x = torch.from_numpy(np.random.default_rng(rows).normal(size=(rows, FEATURES)).astype(np.float32))
    with torch.inference_mode():
        for _ in range(20):
            module(x.to(device)).cpu()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            module(x.to(device)).cpu()
            done += rows
    return done / (time.perf_counter() - start)


def answers_wrong(base: str, model: str, reference, clients: int = 64, rounds: int = 4) -> str:
    """'' when `clients` concurrent V2 JSON requests of distinct rows all match the model on the CPU."""
    rows = np.random.default_rng(7).normal(size=(clients * rounds, FEATURES)).astype(np.float32)
    want = reference(rows)

    def ask(i: int) -> str:
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, FEATURES],
                                       "data": rows[i].tolist()}]}).encode()
        request = urllib.request.Request(f"{base}/v2/models/{model}/infer", body,
                                         {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                got = np.asarray(json.load(response)["outputs"][0]["data"], np.float32)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return f"request {i}: {type(exc).__name__}: {exc}"
        if got.shape != want[i].shape or not np.allclose(got, want[i], rtol=1e-3, atol=1e-3):
            return f"request {i}: answer differs from the CPU reference (max diff {np.abs(got - want[i]).max():.3g})"
        return ""

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        problems = [p for p in pool.map(ask, range(len(rows))) if p]
    return f"{len(problems)} of {len(rows)}: {problems[0]}" if problems else ""


def dump_server(server, why: str) -> None:
    print(f"--- {why}: every server thread's stack (SIGUSR1) and the log's tail", flush=True)
    try:
        os.kill(server.proc.pid, signal.SIGUSR1)
        time.sleep(1.0)
    except OSError as exc:
        print(f"could not signal the server: {exc}", flush=True)
    print(server.log_tail(120), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--device", default="cuda:0", help="cpu: a smoke run of the script itself")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    rows_out, failures = [], []  # any failure makes the step fail (exit 1) after the report
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        references = repository(root / "repo", args.device)
        http, grpc, metrics = free_port(), free_port(), free_port()
        cmd = [sys.executable, "-m", "gpuserve.cli", "start", str(root / "repo"), "--host", "127.0.0.1",
               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
        base = f"http://127.0.0.1:{http}"
        server = ServerProcess("gpuserve", cmd, root / "server.log").start()
        try:
            server.wait_ready([f"{base}/v2/health/ready"] + [f"{base}/v2/models/{m}/ready" for m in references],
                              timeout=240)
            for model, reference in references.items():
                wrong = answers_wrong(base, model, reference)
                print(json.dumps({"model": model, "answers_before_load": wrong or "all right"}), flush=True)
                failures += [f"{model} before the load: {wrong}"] if wrong else []
                for protocol in ("v2-binary", "grpc"):
                    url = base if protocol != "grpc" else f"grpc://127.0.0.1:{grpc}"
                    target = loadgen.make_target(url, model, protocol, "input", [1, FEATURES])
                    for concurrency in levels:
                        run = loadgen.run_grpc if protocol == "grpc" else loadgen.run_builtin
                        result = run(target, concurrency, args.seconds, 0.5)
                        row = {"model": model, "protocol": protocol, "c": concurrency, "rps": round(result.rps, 1),
                               "p50_ms": round(result.p50_ms, 3), "p99_ms": round(result.p99_ms, 3),
                               "errors": result.errors, "error_sample": result.error_sample[:300]}
                        print(json.dumps(row), flush=True)
                        rows_out.append(row)
                        if result.errors or not result.requests:
                            failures.append(f"{model} {protocol} c={concurrency}: {result.errors} errors, "
                                            f"{result.requests} answered")
                            dump_server(server, f"{model} {protocol} c={concurrency}")
                            break
                wrong = answers_wrong(base, model, reference)
                print(json.dumps({"model": model, "answers_after_load": wrong or "all right"}), flush=True)
                if wrong:
                    failures.append(f"{model} after the load: {wrong}")
                    dump_server(server, f"{model}: wrong or missing answers after the load")
                formed = batch_counts(base, model)
                print(json.dumps({"model": model, "batches_formed": formed}), flush=True)
        finally:
            server.stop()
            print("server log tail:\n" + server.log_tail(15), flush=True)
        module = torch_mlp(FEATURES).to(args.device)  # the torch models' module (same seed), for the limits
        limits = {rows: round(direct_rows_s(module, rows, 1.0, args.device), 1) for rows in (1, 16, 64)}
        name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
        print(json.dumps({"direct_rows_s": limits, "device": name,
                          "torch": torch.__version__}), flush=True)
    print("\nmodel       protocol    c    req/s    p50 ms   p99 ms   vs direct B=1")
    for row in rows_out:
        print(f"{row['model']:<11} {row['protocol']:<10} {row['c']:>3} {row['rps']:>9.1f} {row['p50_ms']:>8.2f} "
              f"{row['p99_ms']:>8.2f}   {row['rps'] / limits[1]:.2f}")
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
