"""Plot a benchmark CSV: per (model, protocol), throughput and p50/p99 latency vs concurrency per server.

    python benchmarks/plot.py benchmarks/results/http.csv benchmarks/results/http.png

Needs matplotlib (the bench venv: bash benchmarks/peers/setup.sh bench).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def _f(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def main(csv_path: str, png_path: str) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["server"] != "in-process" and _f(r["rps"]) > 0]
    limits = {}
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            if r["server"] == "in-process" and r["protocol"] == "ort-formed":
                limits.setdefault(r["model"], []).append((int(r["concurrency"]), _f(r["rps"])))
    groups = sorted({(r["model"], r["protocol"]) for r in rows})
    if not groups:
        print("nothing to plot", file=sys.stderr)
        return 1
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 3.6 * len(groups)), squeeze=False)
    servers = sorted({r["server"] for r in rows}, key=lambda s: (s != "gpuserve", s))
    colors = {s: f"C{i}" for i, s in enumerate(servers)}
    for (model, protocol), (ax_t, ax_l) in zip(groups, axes):
        for server in servers:
            pts = sorted((int(r["concurrency"]), _f(r["rps"]), _f(r["p50_ms"]), _f(r["p99_ms"])) for r in rows
                         if r["model"] == model and r["protocol"] == protocol and r["server"] == server)
            if not pts:
                continue
            c = [p[0] for p in pts]
            ax_t.plot(c, [p[1] for p in pts], "o-", color=colors[server], label=server)
            ax_l.plot(c, [p[2] for p in pts], "o-", color=colors[server], label=f"{server} p50")
            ax_l.plot(c, [p[3] for p in pts], "s--", color=colors[server], label=f"{server} p99")
        top = max((_f(r["rps"]) for r in rows if r["model"] == model and r["protocol"] == protocol), default=0)
        title_extra = ""
        if model in limits:
            pts = sorted(limits[model])
            if max(p[1] for p in pts) <= 5 * top:
                ax_t.plot([p[0] for p in pts], [p[1] for p in pts], "k:", label="in-process limit (formed batches)")
            else:  # off the scale: say it instead of flattening every server's curve
                title_extra = f"\nin-process limit {min(p[1] for p in pts):,.0f}-{max(p[1] for p in pts):,.0f} rows/s (off scale)"
        for ax in (ax_t, ax_l):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency (connections)")
            ax.grid(True, which="both", alpha=0.3)
        ax_t.set_ylabel("requests/s")
        ax_t.set_title(f"{model} / {protocol}: throughput{title_extra}", fontsize=10)
        ax_l.set_yscale("log")
        ax_l.set_ylabel("latency ms")
        ax_l.set_title(f"{model} / {protocol}: p50 (solid) and p99 (dashed)")
        ax_t.legend(fontsize=7)
        ax_l.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    print(png_path)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
