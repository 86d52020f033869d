"""Triton's model instance update (its qa L0_model_update instance_update_test.py): reloading a Python model
whose file and config change only in `instance_group` adds or removes instances in place; instances still
asked for are neither finalized nor initialized again, and requests keep being answered throughout."""

import json
import threading

import numpy as np
import tritonclient.http as httpclient

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

MODEL = """
import os
import time

import triton_python_backend_utils as pb_utils

LOG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "calls.log")


class TritonPythonModel:
    def initialize(self, args):
        with open(LOG, "a") as log:
            log.write("initialize\\n")

    def execute(self, requests):
        time.sleep(0.01)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(
            r, "INPUT0").as_numpy())]) for r in requests]

    def finalize(self):
        with open(LOG, "a") as log:
            log.write("finalize\\n")
"""

CONFIG = """
name: "counted"
backend: "python"
max_batch_size: {batch}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
instance_group [ {groups} ]
"""


def _write(folder, groups, batch=0):
    (folder / "config.pbtxt").write_text(CONFIG.format(batch=batch, groups=groups))


def _calls(folder):
    log = folder / "calls.log"
    lines = log.read_text().split() if log.exists() else []
    return lines.count("initialize"), lines.count("finalize")


def test_a_reload_that_changes_only_instance_groups_updates_instances_in_place(tmp_path):
    folder = tmp_path / "counted"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(MODEL)
    _write(folder, "{ count: 3 kind: KIND_CPU }")
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        url = f"127.0.0.1:{server.ports['http']}"
        stop, failures = threading.Event(), []

        def load():  # requests all along: none may fail while instances come and go
            with httpclient.InferenceServerClient(url) as client:
                while not stop.is_set():
                    x = httpclient.InferInput("INPUT0", [4], "FP32")
                    x.set_data_from_numpy(np.ones(4, np.float32))
                    try:
                        client.infer("counted", [x])
                    except Exception as exc:  # noqa: BLE001 - collected for the assertion below
                        failures.append(exc)

        with httpclient.InferenceServerClient(url) as client:
            assert _calls(folder) == (3, 0)
            threads = [threading.Thread(target=load) for _ in range(3)]
            for thread in threads:
                thread.start()
            _write(folder, "{ count: 4 kind: KIND_CPU }")
            client.load_model("counted")
            assert _calls(folder) == (4, 0)  # one more; the three running ones untouched
            _write(folder, '{ name: "a" count: 1 kind: KIND_CPU }, { name: "b" count: 1 kind: KIND_CPU }')
            client.load_model("counted")
            assert _calls(folder) == (4, 2)  # two fewer, finalized before the load answered
            assert [g["name"] for g in client.get_model_config("counted")["instance_group"]] == ["a", "b"]
            config = client.get_model_config("counted")
            config["instance_group"][0]["count"] = 2  # through the load API's config, as Triton's qa does
            client.load_model("counted", config=json.dumps(config))
            assert _calls(folder) == (5, 2)
            stop.set()
            for thread in threads:
                thread.join()
            assert not failures
            _write(folder, "{ count: 2 kind: KIND_CPU }", batch=2)  # another field changed: loaded again
            client.load_model("counted")
            assert _calls(folder) == (7, 5)
            (folder / "1" / "model.py").write_text(MODEL + "\n# changed\n")  # the file changed: loaded again
            client.load_model("counted")
            assert _calls(folder) == (9, 7)
            client.unload_model("counted")
    assert _calls(folder) == (9, 9)


def _wait_for(predicate, timeout=10.0):
    import time

    end = time.monotonic() + timeout
    while not predicate() and time.monotonic() < end:
        time.sleep(0.02)
    return predicate()


def test_a_stateful_models_leaving_instance_stays_until_its_sequences_end(tmp_path):
    """With sequence_batching each sequence stays on its instance: an instance the reload removes takes no
    new sequence, finishes the ones it runs, and only then is finalized (Triton's qa
    _test_scheduler_update_with_ongoing_sequences)."""
    folder = tmp_path / "counted"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(MODEL)
    batching = "\nsequence_batching { direct { } }\n"
    (folder / "config.pbtxt").write_text(CONFIG.format(batch=0, groups="{ count: 2 kind: KIND_CPU }") + batching)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            def step(sequence, **flags):
                x = httpclient.InferInput("INPUT0", [4], "FP32")
                x.set_data_from_numpy(np.full(4, sequence, np.float32))
                return client.infer("counted", [x], sequence_id=sequence, **flags).as_numpy("OUTPUT0")

            step(1, sequence_start=True)
            step(2, sequence_start=True)  # one sequence on each instance
            (folder / "config.pbtxt").write_text(
                CONFIG.format(batch=0, groups="{ count: 1 kind: KIND_CPU }") + batching)
            client.load_model("counted")
            assert _calls(folder) == (2, 0)  # the leaving instance still runs sequence 2
            assert step(2)[0] == 2 and step(1)[0] == 1  # both go on, each on its instance
            step(1, sequence_end=True)  # frees the staying instance's one slot (max_batch_size 0), as Triton's
            step(3, sequence_start=True)  # a new sequence goes to the instance that stays
            assert _calls(folder) == (2, 0)
            step(2, sequence_end=True)
            assert _wait_for(lambda: _calls(folder) == (2, 1))  # its last sequence over: finalized
            step(3, sequence_end=True)
            (folder / "config.pbtxt").write_text(
                CONFIG.format(batch=0, groups="{ count: 3 kind: KIND_CPU }") + batching)
            client.load_model("counted")
            assert _calls(folder) == (4, 1)
            client.unload_model("counted")
    assert _calls(folder) == (4, 4)



CONCURRENT = """
import os
import threading
import time

import triton_python_backend_utils as pb_utils

MOST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "most.txt")
LOCK = threading.Lock()
NOW = [0, 0]


class TritonPythonModel:
    def execute(self, requests):
        with LOCK:
            NOW[0] += 1
            NOW[1] = max(NOW)
            with open(MOST, "w") as out:
                out.write(str(NOW[1]))
        time.sleep(0.02)
        with LOCK:
            NOW[0] -= 1
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(
            r, "INPUT0").as_numpy())]) for r in requests]
"""


def test_instances_added_in_place_take_rate_limiter_tickets(tmp_path):
    """With --rate-limit=execution_count, an instance the in-place update adds runs only with its group's
    resources (before, it ran beside the limited ones unlimited), and a removed one gives its ticket back."""
    from concurrent.futures import ThreadPoolExecutor

    from gpuserve.engine import rate_limiter

    folder = tmp_path / "counted"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(CONCURRENT)
    group = "{{ count: {} kind: KIND_CPU rate_limiter {{ resources [ {{ name: \"R\" count: 1 }} ] }} }}"
    _write(folder, group.format(1))
    try:
        registry = DiskRepository(tmp_path).populate(ModelRepository())
        with running_server(repository=registry, rate_limit="execution_count",
                            rate_limit_resources=["R:1"]) as server:
            url = f"127.0.0.1:{server.ports['http']}"

            def infer(_):
                with httpclient.InferenceServerClient(url) as client:
                    x = httpclient.InferInput("INPUT0", [4], "FP32")
                    x.set_data_from_numpy(np.ones(4, np.float32))
                    return client.infer("counted", [x]).as_numpy("OUTPUT0")

            with httpclient.InferenceServerClient(url) as client:
                _write(folder, group.format(3))
                client.load_model("counted")
                model = registry.get_model("counted")
                assert len(model.instances) == 3 and len(rate_limiter.limiter().tickets) == 3
                with ThreadPoolExecutor(6) as pool:
                    answers = list(pool.map(infer, range(24)))
                assert all(a.tolist() == [1, 1, 1, 1] for a in answers)
                assert (folder / "most.txt").read_text() == "1"  # R:1 lets one instance run at a time
                _write(folder, group.format(2))
                client.load_model("counted")
                assert len(rate_limiter.limiter().tickets) == 2
                client.unload_model("counted")
                assert _wait_for(lambda: rate_limiter.limiter().tickets == [])
    finally:
        rate_limiter.configure(None)
