"""Two CUDA graphs replayed at once on two threads: captured on one stream (sharing its cuBLAS workspace, as
gpuserve did until session 8) against a stream per graph (what backends/torch_graphs.py does now).

The first H200 run of `gpuserve start` with graphs lost requests at 64 clients and then aborted; this shows
whether the shared workspace is the cause. Each variant runs in its own process (a corrupted or hung device
must not spoil the other) with a time limit, replaying the issue's 1024x3 MLP at 20 rows (graph 32) on one
thread and 64 rows (graph 64) on the other, every answer checked against the module on the CPU. Without the
per-stream replay lock, so the variants differ only in where the graphs were captured. Prints a JSON line
per variant. Run by verify_all.sh (step `graphs`), which checks the stream-per-graph capture only: the
one-stream variant (`--both`) hung a thread for its whole time limit on the H200 (RESULTS.md, session 8).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_variant(variant: str, seconds: float) -> dict:
    import torch

    from gpuserve.backends import torch_graphs
    from gpuserve.backends.torch import TorchBackend
    from models import export_torch, torch_mlp

    width = 1024
    net = torch_mlp(width)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_torch(net, width, Path(tmp) / "model.pt2")
        backend = TorchBackend(str(path), device="cuda:0")
    one = torch.cuda.Stream(device="cuda:0")
    streams = (lambda: one) if variant == "one_stream" else None
    with torch.inference_mode():
        graphs = torch_graphs.capture_graphs(torch, lambda *a: backend._outputs(backend.module(*a)), backend.inputs,
                                             [32, 64], backend.torch_device, backend._cast, streams)
    for graph in graphs.values():
        graph.lock = threading.Lock()  # one per graph, as before: only the capture stream differs
    backend.graphs, backend._graph_sizes = graphs, sorted(graphs)
    rng = np.random.default_rng(5)
    cases = {rows: rng.normal(size=(rows, width)).astype(np.float32) for rows in (20, 64)}
    with torch.inference_mode():
        wants = {rows: net(torch.from_numpy(x)).numpy() for rows, x in cases.items()}
    done, wrong, worst = {20: 0, 64: 0}, {20: 0, 64: 0}, {20: 0.0, 64: 0.0}

    def replay(rows: int) -> None:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            got = backend.run({"input": cases[rows]})["output__0"]
            diff = float(np.abs(got - wants[rows]).max())
            worst[rows] = max(worst[rows], diff)
            wrong[rows] += diff > 1e-2
            done[rows] += 1

    threads = [threading.Thread(target=replay, args=(rows,), daemon=True) for rows in (20, 64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 20)
    stuck = [t.name for t in threads if t.is_alive()]
    return {"variant": variant, "replays": done, "wrong": wrong, "max_abs_diff": worst, "stuck_threads": len(stuck)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=["one_stream", "stream_per_graph"])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--both", action="store_true", help="also the one-stream capture (hangs: ~25 s)")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.seconds)), flush=True)
        return
    healthy = False  # what gpuserve does now must answer right, with no thread stuck
    for variant in ("stream_per_graph", "one_stream") if args.both else ("stream_per_graph",):
        cmd = [sys.executable, __file__, "--variant", variant, "--seconds", str(args.seconds)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if lines:
                print(lines[-1], flush=True)
                result = json.loads(lines[-1])
                if variant == "stream_per_graph":
                    healthy = not result["stuck_threads"] and not any(result["wrong"].values())
            else:
                print(json.dumps({"variant": variant, "exit": proc.returncode,
                                  "stderr_tail": proc.stderr[-1500:]}), flush=True)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            print(json.dumps({"variant": variant, "error": "the process did not finish in time (hung)",
                              "printed": out[-600:]}), flush=True)
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
