"""What `gpuserve start --workers N` answers for all its workers at once: statistics and metrics summed.

The kernel hands each client connection to one worker, and each worker counts only what it served, so a
client reading statistics or a Prometheus scrape would see one worker's share (perf_analyzer subtracts two
readings of a model's statistics: a share makes its server-side numbers wrong by N). The worker a client
asks gathers the others' answers (server/peers.py) and merges them here: pure functions of their JSON and
text, so they are tested without processes.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

# Per-machine gauges every worker reads alike (the GPUs, the host's CPU and memory): one worker's value, not a sum
MACHINE_FAMILIES = ("nv_gpu_", "nv_cpu_", "nv_energy_consumption", "process_max_fds", "process_start_time_seconds",
                    "python_info")
# Shares of a whole (0..1), one per worker: their mean
MEAN_FAMILIES = ("nv_cache_util",)


def merge_statistics(own: dict, others: Iterable[dict]) -> dict:
    """`own` ({"model_stats": [...]}, the asked worker's answer, which decides what is listed) with each
    other worker's counts added to the same model and version."""
    entries = own.get("model_stats", [])
    index = {(e.get("name"), e.get("version")): e for e in entries}
    for other in others:
        for entry in other.get("model_stats", []):
            mine = index.get((entry.get("name"), entry.get("version")))
            if mine is not None:
                _add_entry(mine, entry)
    return own


def _add_entry(mine: dict, other: dict) -> None:
    for key, value in other.items():
        if key in ("name", "version"):
            continue
        if key == "last_inference":
            mine[key] = max(int(mine.get(key) or 0), int(value or 0))
        elif key == "batch_stats":
            mine[key] = _add_keyed(mine.get(key) or [], value or [], ("batch_size",))
        elif key == "memory_usage":
            mine[key] = _add_keyed(mine.get(key) or [], value or [], ("type", "id"))
        elif key not in mine:
            mine[key] = value
        else:
            mine[key] = _add(mine[key], value)


def _add(a, b):
    """Numbers summed, dicts summed key by key; anything else keeps the asked worker's value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a + b
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = _add(out[key], value) if key in out else value
        return out
    return a


def _add_keyed(mine: List[dict], other: List[dict], keys: Sequence[str]) -> List[dict]:
    """Lists of entries named by `keys` (batch sizes, memory by kind and device): matching entries summed,
    new ones appended, in the order the asked worker had them (then by the keys, as Triton sorts batch sizes)."""
    def key_of(entry: dict) -> Tuple:
        return tuple(entry.get(k) for k in keys)

    merged = {key_of(e): dict(e) for e in mine}
    for entry in other:
        key = key_of(entry)
        if key in merged:
            merged[key] = {k: (v if k in keys else _add(v, entry[k]) if k in entry else v)
                           for k, v in merged[key].items()}
            for k, v in entry.items():
                merged[key].setdefault(k, v)
        else:
            merged[key] = dict(entry)
    out = list(merged.values())
    if keys == ("batch_size",):
        out.sort(key=lambda e: e.get("batch_size") or 0)
    return out


def merge_expositions(texts: Sequence[str]) -> str:
    """Prometheus text from each worker (the asked one first) as one exposition: each family once, with its
    HELP and TYPE; a sample summed over the workers that have it, except per-machine gauges and summary
    quantiles, which are the first worker's (quantiles cannot be added), shares, which are averaged, and
    counters' creation times, the earliest."""
    families: Dict[str, dict] = {}
    order: List[str] = []
    for position, text in enumerate(texts):
        current: Optional[dict] = None
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    name = parts[2]
                    current = families.get(name)
                    if current is None:
                        current = families[name] = {"head": {}, "samples": {}, "order": []}
                        order.append(name)
                    current["head"].setdefault(parts[1], line)
                continue
            sample, _, value = line.rpartition(" ")
            if not sample:
                continue
            if current is None:  # a sample before any HELP/TYPE: its own untyped family
                current = families.setdefault(sample, {"head": {}, "samples": {}, "order": []})
                if sample not in order:
                    order.append(sample)
            _take(current, sample, value, position)
    lines: List[str] = []
    for name in order:
        family = families[name]
        for kind in ("HELP", "TYPE"):
            if kind in family["head"]:
                lines.append(family["head"][kind])
        for sample in family["order"]:
            total, count, first, kind = family["samples"][sample]
            value = first if kind == "first" else total / count if kind == "mean" else total  # (min: in total)
            lines.append(f"{sample} {_number(value)}")
    return "\n".join(lines) + "\n"


def _take(family: dict, sample: str, value: str, position: int) -> None:
    try:
        number = float(value)
    except ValueError:
        return
    name = sample.split("{", 1)[0]
    if name.startswith(MACHINE_FAMILIES) or 'quantile="' in sample:
        kind = "first"
    elif name.endswith("_created"):  # prometheus_client's creation time of a counter: the earliest worker's
        kind = "min"
    elif name.startswith(MEAN_FAMILIES):
        kind = "mean"
    else:
        kind = "sum"
    kept = family["samples"].get(sample)
    if kept is None:
        family["samples"][sample] = [number, 1, number, kind]
        family["order"].append(sample)
    elif kept[3] == "min":
        kept[0] = min(kept[0], number)
    else:
        kept[0] += number
        kept[1] += 1


def _number(value: float) -> str:
    """As server/metrics.render prints: whole numbers as integers (perf_analyzer's regex reads no exponent)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2 ** 63:
        return str(int(value))
    return repr(float(value))
