"""gpuserve and every available peer (Triton via pytriton, MLServer with and without adaptive batching,
KServe) on the same ONNX models, the same load generator and the same machine, one after another, in one
run; then one Markdown table (server x concurrency -> req/s, p50, p99, gpuserve's ratio to each peer and
to the in-process limit), the CSV and the plot.

    bash benchmarks/peers/setup.sh                       # venvs under .peers/ (once)
    .peers/bench/bin/python benchmarks/compare.py        # full: ~10 min on 2 cores
    .peers/bench/bin/python benchmarks/compare.py --smoke
    .peers/bench/bin/python benchmarks/compare.py --servers gpuserve,kserve --protocols v1 --generator wrk

Writes benchmarks/results/compare.{csv,md,png}. Each server runs the protocols it speaks among
--protocols (MLServer: V2 JSON only; Triton: V2 JSON and binary; gpuserve, KServe: all three; `grpc`,
not in the default, is gpuserve's and Triton's `inference.GRPCInferenceService/ModelInfer`).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import loadgen  # noqa: E402
import run_http  # noqa: E402
from peers import run_kserve, run_mlserver, run_triton  # noqa: E402

PEERS = {  # server name -> (launcher, supported protocols, availability check, venv)
    "triton": (run_triton.launch, run_triton.SUPPORTED, run_triton.available, "triton"),
    "mlserver": (run_mlserver.SERVERS["mlserver"], run_mlserver.SUPPORTED, run_mlserver.available, "mlserver"),
    "mlserver-nobatch": (run_mlserver.SERVERS["mlserver-nobatch"], run_mlserver.SUPPORTED, run_mlserver.available,
                         "mlserver"),
    "kserve": (run_kserve.launch, run_kserve.SUPPORTED, run_kserve.available, "kserve"),
}
PACKAGES = {"triton": "nvidia-pytriton", "mlserver": "mlserver", "kserve": "kserve"}


def _version(venv: str, package: str) -> str:
    python = harness.PEERS_DIR / venv / "bin" / "python"
    code = (f"import importlib.metadata as m; print(m.version({package!r}), m.version('onnxruntime'))")
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=30).stdout.split()
        return f"{package} {out[0]}, onnxruntime {out[1]}"
    except (OSError, IndexError, subprocess.SubprocessError):
        return f"{package} ?"


def _gpuserve_version() -> str:
    python = harness.ROOT / ".venv" / "bin" / "python"
    code = "import gpuserve, onnxruntime; print(gpuserve.__version__, onnxruntime.__version__)"
    try:
        v, ort = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60).stdout.split()
        commit = subprocess.run(["git", "-C", str(harness.ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(harness.ROOT), "status", "--porcelain", "--untracked-files=no", "--",
                                "gpuserve", "engine", "backends", "server", "kernels"], capture_output=True, text=True,
                               timeout=10).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
        return (f"gpuserve {v} (commit {commit}" + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else "")
                + f"), onnxruntime {ort}")
    except (OSError, ValueError, subprocess.SubprocessError):
        return "gpuserve ?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_common_args(parser, protocols=[p for p in loadgen.PROTOCOLS if p != "grpc"])
    parser.set_defaults(csv=harness.RESULTS / "compare.csv")
    parser.add_argument("--servers", default="gpuserve," + ",".join(PEERS))
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "compare", help="STEM.md and STEM.png")
    parser.add_argument("--no-selftest", action="store_true",
                        help="skip measuring the generator against a trivial endpoint")
    args = parser.parse_args()
    harness.settle_args(args)
    servers = [s for s in args.servers.split(",") if s]
    started = datetime.datetime.now().astimezone()
    paths = harness.build_models()
    gpuserve_version = _gpuserve_version()  # the code on disk when the server starts (editable install)

    plan, skipped, notes = [], [], []
    for server in servers:
        if server == "gpuserve":
            plan.append((server, run_http.SUPPORTED))
            continue
        launcher, supported, available, venv = PEERS[server]
        missing = available()
        if missing:
            skipped.append(f"{server}: {missing}")
        else:
            plan.append((server, supported))
    total = sum(len(harness.cases(args.model_list, args.protocol_list, sup)) * len(args.concurrency_list)
                for _, sup in plan)
    selftest = []
    if not args.no_selftest:
        print("generator capacity against a trivial raw-asyncio endpoint ...", file=sys.stderr)
        if any(p != "grpc" for p in args.protocol_list):
            selftest = loadgen.selftest(1.0 if args.smoke else 3.0, [1, 32, 64], [args.generator])
    grpc_selftest = []
    if not args.no_selftest and "grpc" in args.protocol_list:
        print("grpc.aio generator capacity against a trivial grpc.aio server ...", file=sys.stderr)
        grpc_selftest = loadgen.selftest_grpc(1.0 if args.smoke else 3.0, [1, 32, 64])
    progress = harness.Progress(total, "compare")
    rows = []
    for server, supported in plan:
        try:
            if server == "gpuserve":
                rows += run_http.run_gpuserve(args, paths, progress)
            else:
                rows += harness.run_server(server, PEERS[server][0], supported, args, paths, progress)
        except Exception as exc:  # one peer failing to start must not lose the others' rows
            progress.write(f"{server}: FAILED: {exc}")
            notes.append(f"{server} failed: {str(exc).splitlines()[0]}")
            rows += harness.skipped_rows(server, args, supported, str(exc).splitlines()[0])
    progress.close()

    harness.write_csv(rows, args.csv)
    table = harness.markdown(rows)
    png = harness.plot(args.csv, args.out.with_suffix(".png"))
    versions = [gpuserve_version] + sorted({_version(PEERS[s][3], PACKAGES[PEERS[s][3]])
                                              for s, _ in plan if s != "gpuserve"})
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).as_posix()] + sys.argv)
    header = [
        f"Date: {started:%Y-%m-%d %H:%M %Z} (`date`: {started.strftime('%a %b %d %H:%M:%S %Z %Y')})",
        f"Machine: {harness.machine()}; {platform.platform()}",
        f"Command: `{command}`",
        f"Generator: {args.generator}, closed loop, {args.seconds:g} s measured after {args.warmup:g} s warm-up per "
        f"point, batch-1 requests, keep-alive connections = concurrency; every server alone on the machine with "
        f"the generator; onnxruntime intra_op_num_threads=2, spinning off, everywhere. A point during which other "
        f"processes used more than {args.max_other:g} cores is rerun up to {args.retries} time(s), quietest kept.",
        "Versions: " + "; ".join(versions),
    ]
    if selftest:
        header.append("Generator capacity (trivial raw-asyncio endpoint, same machine): " + ", ".join(
            f"c={r.concurrency}: {r.rps:,.0f} req/s" for r in selftest))
    if grpc_selftest:
        header.append("gRPC generator capacity (trivial grpc.aio server, same machine): " + ", ".join(
            f"c={r.concurrency}: {r.rps:,.0f} req/s" for r in grpc_selftest))
    if "grpc" in args.protocol_list:
        header.append("gRPC points: grpc.aio closed loop, one pre-serialized ModelInferRequest (raw_input_contents), "
                      "one channel per 8 callers (at most 8)")
    header += [f"Skipped: {s}" for s in skipped] + [f"Note: {n}" for n in notes]
    text = "\n".join(f"- {h}" for h in header) + "\n\n" + table + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    print(f"csv {args.csv}\nmarkdown {args.out.with_suffix('.md')}\nplot {png or 'skipped'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
