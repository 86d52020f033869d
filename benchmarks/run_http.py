"""gpuserve over HTTP: start it on a generated model repository, sweep concurrency with a load
generator, then measure the in-process limit (onnxruntime at batch 1 and at the batch sizes the server
formed, read from GET /v2/models/NAME/stats) and write CSV + Markdown + PNG under benchmarks/results/.

    .peers/bench/bin/python benchmarks/run_http.py                       # full: 2 models x 3 protocols x 1,8,32,64
    .peers/bench/bin/python benchmarks/run_http.py --smoke               # CI: a few seconds
    .venv/bin/python benchmarks/run_http.py --generator wrk --protocols v2-binary --models mlp

Models: `small` = models.small_mlp_onnx (64 -> 256 -> 10 today) and `mlp` =
models.mlp_onnx(width=1024, layers=3, in_features=1024). Every request carries one row.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Launch, ServerProcess, free_port  # noqa: E402

SUPPORTED = ("v2-json", "v2-binary", "v1", "grpc")


def launch_gpuserve(paths: Dict[str, Path], work: Path) -> Launch:
    """Bare-artefact repository (NAME/model.onnx): max_batch_size 64 comes from the dynamic batch dim."""
    repo = work / "repo"
    for name, path in paths.items():
        (repo / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, repo / name / "model.onnx")
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [harness.gpuserve_bin(), "start", str(repo), "--host", "127.0.0.1", "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    base = f"http://127.0.0.1:{http}"
    process = ServerProcess("gpuserve", cmd, work / "server.log").start()
    return Launch(process, base, [f"{base}/v2/health/ready"] + [f"{base}/v2/models/{n}/ready" for n in paths],
                  grpc_url=f"grpc://127.0.0.1:{grpc}")


def run_gpuserve(args, paths: Dict[str, Path], progress=None) -> List[dict]:
    """gpuserve's rows plus the in-process rows (limit measured after the server has stopped)."""
    rows = harness.run_server("gpuserve", launch_gpuserve, SUPPORTED, args, paths, progress, batch_stats=True)
    if progress:
        progress.write("in-process limit: onnxruntime at batch 1 and at the batch sizes gpuserve formed ...")
    return rows + harness.add_limits(rows, paths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_common_args(parser, protocols=SUPPORTED[:3])
    parser.add_argument("--out", type=Path, default=harness.RESULTS / "http",
                        help="output stem: STEM.md and STEM.png (the CSV goes to --csv)")
    args = parser.parse_args()
    harness.settle_args(args)
    paths = harness.build_models()
    total = len(harness.cases(args.model_list, args.protocol_list, SUPPORTED)) * len(args.concurrency_list)
    progress = harness.Progress(total, "gpuserve")
    rows = run_gpuserve(args, paths, progress)
    progress.close()
    harness.write_csv(rows, args.csv, replace_servers=["gpuserve", "in-process"])
    table = harness.markdown(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table + "\n")
    png = harness.plot(args.csv, args.out.with_suffix(".png"))
    print(table)
    print(f"csv {args.csv}\nmarkdown {args.out.with_suffix('.md')}\nplot {png or 'skipped'}")
    failed = [r for r in rows if r["server"] == "gpuserve" and (r.get("rps") or 0) <= 0]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
