"""How much slower a model call is when its thread slept just before it (the machine's idle penalty).

A served model at one client always waits for the next request, so on a machine where an idle vCPU comes
back slow, every such request pays this on top of gpuserve's own cost; a back-to-back direct call does not.
Times the torch 1024x3 MLP (CPU) at the given rows and intra-op threads, median of N calls: back to back,
and each after a sleep of --sleep-us. Run:
    .venv/bin/python benchmarks/idle_penalty.py [--threads 1,2] [--rows 1,16] [--sleep-us 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def median_call_us(net, x, torch, pause_s: float, calls: int) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(20):
            net(x)
        for _ in range(calls):
            if pause_s:
                time.sleep(pause_s)
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e6, 1)


def main() -> None:
    import torch

    from models import torch_mlp

    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", default="1,2", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--rows", default="1,16", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--sleep-us", type=float, default=200.0)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    net = torch_mlp(1024)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for rows in args.rows:
            x = torch.from_numpy(np.random.default_rng(rows).normal(size=(rows, 1024)).astype(np.float32))
            back_to_back = median_call_us(net, x, torch, 0.0, args.calls)
            after_sleep = median_call_us(net, x, torch, args.sleep_us / 1e6, args.calls)
            print(json.dumps({"threads": threads, "rows": rows, "back_to_back_us": back_to_back,
                              f"after_{args.sleep_us:g}us_sleep_us": after_sleep,
                              "penalty_us": round(after_sleep - back_to_back, 1)}), flush=True)


if __name__ == "__main__":
    main()
