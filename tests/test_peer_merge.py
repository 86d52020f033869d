"""Statistics and metrics of several workers merged as one server's (gpuserve/peer_merge.py)."""

from __future__ import annotations

from gpuserve.peer_merge import merge_expositions, merge_statistics


def _entry(name, version, count, ns, last, batches, responses=None):
    entry = {"name": name, "version": version, "last_inference": last, "inference_count": count,
             "execution_count": count, "inference_stats": {"success": {"count": count, "ns": ns},
                                                           "queue": {"count": count, "ns": ns // 10}},
             "batch_stats": [{"batch_size": size, "compute_infer": {"count": n, "ns": n * 100}}
                             for size, n in batches],
             "memory_usage": [{"type": "CPU", "id": 0, "byte_size": 1000}]}
    if responses is not None:
        entry["response_stats"] = responses
    return entry


def test_statistics_add_up_per_model_and_version():
    own = {"model_stats": [_entry("a", "1", 3, 300, 50, [(1, 3)]), _entry("b", "1", 1, 10, 7, [(2, 1)])]}
    other = {"model_stats": [_entry("a", "1", 4, 400, 90, [(1, 2), (4, 2)],
                                    {"0": {"success": {"count": 4, "ns": 40}}}),
                             _entry("c", "1", 9, 9, 9, [])]}  # a model the asked worker does not list
    merged = merge_statistics(own, [other, {"model_stats": []}])
    a, b = merged["model_stats"]
    assert [e["name"] for e in merged["model_stats"]] == ["a", "b"]
    assert (a["inference_count"], a["execution_count"], a["last_inference"]) == (7, 7, 90)
    assert a["inference_stats"] == {"success": {"count": 7, "ns": 700}, "queue": {"count": 7, "ns": 70}}
    assert a["batch_stats"] == [{"batch_size": 1, "compute_infer": {"count": 5, "ns": 500}},
                                {"batch_size": 4, "compute_infer": {"count": 2, "ns": 200}}]
    assert a["memory_usage"] == [{"type": "CPU", "id": 0, "byte_size": 2000}]
    assert a["response_stats"] == {"0": {"success": {"count": 4, "ns": 40}}}
    assert b["inference_count"] == 1 and b["last_inference"] == 7


WORKER0 = """# HELP nv_inference_count Inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="a",version="1"} 3
nv_inference_count{model="b",version="1"} 0
# HELP nv_gpu_utilization GPU utilization
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5
# HELP nv_inference_queue_summary_us Queue time
# TYPE nv_inference_queue_summary_us summary
nv_inference_queue_summary_us_count{model="a",version="1"} 3
nv_inference_queue_summary_us_sum{model="a",version="1"} 30.5
nv_inference_queue_summary_us{model="a",quantile="0.5",version="1"} 10
# HELP nv_cache_util Cache utilization
# TYPE nv_cache_util gauge
nv_cache_util 0.25
# HELP nv_cpu_memory_total_bytes CPU total memory
# TYPE nv_cpu_memory_total_bytes gauge
nv_cpu_memory_total_bytes 25324953600
"""
WORKER1 = """# HELP nv_inference_count Inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="a",version="1"} 4
nv_inference_count{model="c",version=""} 2
# HELP nv_gpu_utilization GPU utilization
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.75
# HELP nv_inference_queue_summary_us Queue time
# TYPE nv_inference_queue_summary_us summary
nv_inference_queue_summary_us_count{model="a",version="1"} 1
nv_inference_queue_summary_us_sum{model="a",version="1"} 1.5
nv_inference_queue_summary_us{model="a",quantile="0.5",version="1"} 99
# HELP nv_cache_util Cache utilization
# TYPE nv_cache_util gauge
nv_cache_util 0.75
# HELP nv_cpu_memory_total_bytes CPU total memory
# TYPE nv_cpu_memory_total_bytes gauge
nv_cpu_memory_total_bytes 25324953600
# HELP my_custom_total A Python model's own counter
# TYPE my_custom_total counter
my_custom_total 5
my_custom_created 1.7e+09
"""


def test_expositions_merge_family_by_family():
    merged = merge_expositions([WORKER0, WORKER1])
    assert merged == """# HELP nv_inference_count Inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="a",version="1"} 7
nv_inference_count{model="b",version="1"} 0
nv_inference_count{model="c",version=""} 2
# HELP nv_gpu_utilization GPU utilization
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5
# HELP nv_inference_queue_summary_us Queue time
# TYPE nv_inference_queue_summary_us summary
nv_inference_queue_summary_us_count{model="a",version="1"} 4
nv_inference_queue_summary_us_sum{model="a",version="1"} 32
nv_inference_queue_summary_us{model="a",quantile="0.5",version="1"} 10
# HELP nv_cache_util Cache utilization
# TYPE nv_cache_util gauge
nv_cache_util 0.5
# HELP nv_cpu_memory_total_bytes CPU total memory
# TYPE nv_cpu_memory_total_bytes gauge
nv_cpu_memory_total_bytes 25324953600
# HELP my_custom_total A Python model's own counter
# TYPE my_custom_total counter
my_custom_total 5
my_custom_created 1700000000
"""


def test_expositions_keep_the_earliest_creation_time():
    later = WORKER1.replace("my_custom_total 5", "my_custom_total 1").replace("1.7e+09", "1700000050.5")
    merged = merge_expositions([later, WORKER1])
    assert "my_custom_total 6\nmy_custom_created 1700000000\n" in merged


def test_one_exposition_comes_back_as_it_was():
    assert merge_expositions([WORKER0]) == WORKER0
