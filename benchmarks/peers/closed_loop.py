"""The closed-loop comparison several peer benchmarks share: each server started in turn, a checked first request,
a warm-up, then loadgen's builtin generator at each concurrency, `rounds` times; the table RESULTS.md takes."""

from __future__ import annotations

import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import harness
import loadgen


def measure(servers: Sequence[str], start: Callable, path: str, body: bytes, answered: Callable[[bytes], bool],
            concurrency: Sequence[int], seconds: float, rounds: int) -> Dict[Tuple[str, int], List]:
    """{(server, clients): [one Result a round]}; `start(server)` gives a harness.ServerProcess with `.base`, and
    `answered(body)` says whether the first answer is the right one (else the run stops, naming the server)."""
    results: Dict[Tuple[str, int], List] = {}
    for _ in range(rounds):
        for server in servers:
            process = start(server)
            try:
                target = loadgen.Target(f"{process.base}{path}", body=body,
                                        headers={"Content-Type": "application/json"})
                status, answer = loadgen.check_target(target)
                if status != 200 or not answered(answer):
                    raise RuntimeError(f"{server}: {status} {answer[:200]!r}")
                loadgen.run("builtin", target, 8, 1.0, warmup=0.3)
                for c in concurrency:
                    result = loadgen.run("builtin", target, c, seconds, warmup=0.5)
                    print(f"{server:>16} " + result.line(), file=sys.stderr, flush=True)
                    results.setdefault((server, c), []).append(result)
            finally:
                process.stop()
    return results


def report(results: Dict[Tuple[str, int], List], servers: Sequence[str], concurrency: Sequence[int], seconds: float,
           rounds: int, script: str, limit: str) -> None:
    """The run's header line (date, machine, command), the in-process limit, and the table, best round shown."""
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')} | {harness.machine()} | builtin generator, {seconds:g} s a "
          f"point, {rounds} rounds (best shown) | `python benchmarks/peers/{script} {' '.join(sys.argv[1:])}`\n")
    print(f"{limit}\n")
    print("| server | clients | req/s (best) | req/s (each round) | p50 ms | p99 ms |\n|---|---:|---:|---|---:|---:|")
    for server in servers:
        for c in concurrency:
            each = results[(server, c)]
            best = max(each, key=lambda r: r.rps)
            print(f"| {server} | {c} | {best.rps:,.0f} | {' / '.join(f'{r.rps:,.0f}' for r in each)} | "
                  f"{best.p50_ms:.2f} | {best.p99_ms:.2f} |")
