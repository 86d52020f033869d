"""Parallel workers: a CPU-bound custom model served by two spawned processes, on both cores."""

import concurrent.futures
import json
import os
import signal
import textwrap
import time
import uuid

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository


def _model_folder(folder, implementation: str, source: str, workers: int = 1, **settings):
    """A model folder as MLServer's users write one: model-settings.json naming `implementation` (module.Class)
    with `parallel_workers`, and the module's source beside it."""
    folder.mkdir(parents=True)
    module = implementation.split(".")[0]
    (folder / "model-settings.json").write_text(json.dumps(
        {"name": folder.name, "implementation": implementation, "parallel_workers": workers, **settings}))
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    return folder


def test_cpu_bound_model_runs_in_two_worker_processes(tmp_path, http):
    _model_folder(tmp_path / "busy", "busy_model.Busy", workers=2, source="""
        import os
        import threading
        import time
        from gpuserve import Model

        class Busy(Model):
            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                n = int(payload["instances"][0])
                total = sum(i * i for i in range(n))  # pure-Python CPU work: holds the GIL
                time.sleep(0.1)  # long enough that concurrent requests find the other worker free
                return {"predictions": [total], "pid": os.getpid(),
                        "main_thread": threading.current_thread() is threading.main_thread()}

            def get_input_types(self):
                return [{"name": "n", "datatype": "INT64", "shape": [1]}]
        """)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        model = registry.get_model("busy")
        assert len(model.worker_pids) >= 1 and os.getpid() not in model.worker_pids
        client = http(server)
        assert client.get("/v2/models/busy").json()["inputs"] == [{"name": "n", "datatype": "INT64", "shape": [1]}]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: client.post("/v1/models/busy:predict",
                                                          json={"instances": [300_000]}).json(), range(16)))
        assert all(r["predictions"] == [sum(i * i for i in range(300_000))] for r in replies)
        pids = {r["pid"] for r in replies}
        assert os.getpid() not in pids and len(pids) == 2  # both workers took requests
        # a worker serves one call at a time: its sync predict runs on the worker's own thread, not hopped to an
        # executor thread and back (two waits for the GIL on every request)
        assert all(r["main_thread"] for r in replies)
        bad = client.post("/v1/models/busy:predict", json={"rows": []})
        assert bad.status_code == 500 and "instances" in bad.json()["error"]
        assert client.post("/v1/models/busy:predict", json={"instances": [10]}).json()["predictions"] == [285]


def test_each_worker_imports_its_own_folders_module(tmp_path, http):
    # MLServer's layout: a models.py next to each model-settings.json, the same module name in every folder.
    # Spawned workers inherit the parent's sys.path, where the folders imported before theirs come first.
    for letter in "abc":
        _model_folder(tmp_path / letter, f"models.Runtime{letter.upper()}", name=f"model-{letter}", source=f"""
            from gpuserve import Model

            class Runtime{letter.upper()}(Model):
                def load(self):
                    self.ready = True

                def predict(self, payload, headers=None):
                    return {{"predictions": ["{letter}"]}}
            """)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        for letter in "abc":
            reply = client.post(f"/v1/models/model-{letter}:predict", json={"instances": [1]})
            assert reply.status_code == 200 and reply.json()["predictions"] == [letter], reply.text


_RUNTIME = """
import os
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceResponse, ResponseOutput


class TwoArgs(Exception):  # pickles, but its (message,) args do not fit __init__ when unpickled
    def __init__(self, what, code):
        super().__init__(f"{what} ({code})")


class Teapot(MLServerError):
    def __init__(self, msg):
        super().__init__(msg, status_code=418)


class Runtime(MLModel):
    async def predict(self, payload):
        kind = StringCodec.decode_input(payload.inputs[0])[0]
        if kind == "two-args":
            raise TwoArgs("broken", 7)
        if kind == "teapot":
            raise Teapot("short and stout")
        if kind == "die":
            os._exit(9)
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="pid", datatype="INT64", shape=[1], data=[os.getpid()])])
"""


def _kind(kind, with_id=True):
    body = {"inputs": [{"name": "kind", "datatype": "BYTES", "shape": [1], "data": [kind]}]}
    return {"id": "r1", **body} if with_id else body


def test_worker_errors_come_back_as_type_message_and_status(tmp_path, http):
    # Two folders each with its own runtime.py: the parent can import at most one of them, so a worker's
    # exception class cannot be rebuilt there; before, unpickling it broke the pool for good.
    for name in ("errs-a", "errs-b"):
        _model_folder(tmp_path / name, "runtime.Runtime", _RUNTIME)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        for name in ("errs-a", "errs-b"):
            url = f"/v2/models/{name}/infer"
            reply = client.post(url, json=_kind("two-args"))
            assert reply.status_code == 500, reply.text
            assert "TwoArgs" in reply.json()["error"] and "broken (7)" in reply.json()["error"]
            reply = client.post(url, json=_kind("teapot"))
            assert reply.status_code == 418 and "Teapot: short and stout" in reply.json()["error"], reply.text
            assert client.post(url, json=_kind("fine")).status_code == 200


def test_a_dead_worker_is_replaced_and_ids_are_generated(tmp_path, http):
    _model_folder(tmp_path / "mortal", "runtime.Runtime", _RUNTIME)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client, url = http(server), "/v2/models/mortal/infer"
        model = registry.get_model("mortal")
        first = client.post(url, json=_kind("fine", with_id=False)).json()
        uuid.UUID(first["id"])  # as MLServer, with or without workers: a request without an id gets one
        assert first["outputs"][0]["data"] == model.worker_pids
        os.kill(model.worker_pids[0], signal.SIGKILL)
        assert model._running[0].conn.poll(10)  # the end of its pipe reads as such in the server
        after = client.post(url, json=_kind("fine"))  # it died idle: this request goes to the one started for it
        assert after.status_code == 200, after.text
        assert after.json()["outputs"][0]["data"] == model.worker_pids != first["outputs"][0]["data"]
        reply = client.post(url, json=_kind("die"))  # dies while serving: that request fails, the next is served
        assert reply.status_code == 500 and "worker process stopped" in reply.json()["error"]
        assert client.post(url, json=_kind("fine")).status_code == 200
        assert model.restarts == 2



def test_the_model_is_ready_only_once_every_worker_has_loaded_it(tmp_path):
    """Each worker answers one of the pool's first describes, so the model is ready once all have loaded it
    (as MLServer's workers each load before the model is ready). Before, a worker up first answered both
    and the model was ready with the other still loading: on a busy core 4 loads in 6 listed one worker, and
    the first requests all went to it. Here the second worker's load takes 3 s longer than the first's."""
    _model_folder(tmp_path / "uneven", "uneven_model.Uneven", workers=2, source=f"""
        import os
        import time
        from gpuserve import Model

        class Uneven(Model):
            def load(self):
                try:  # the first worker here takes the mark and loads at once; the other one takes its time
                    os.close(os.open({str(tmp_path / "first")!r}, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    time.sleep(3)
                self.ready = True

            def predict(self, payload, headers=None):
                return {{"pid": os.getpid()}}
        """)
    model = DiskRepository(tmp_path).populate(ModelRepository()).get_model("uneven")
    try:
        model.load()
        assert len(model.worker_pids) == 2 and os.getpid() not in model.worker_pids
    finally:
        model.stop()


def test_a_worker_stuck_in_predict_is_killed_after_the_stop_timeout(tmp_path, http):
    """MLServer's parallel_workers_timeout: a stop waits that long for a worker still running a request, then
    kills it (before, an unload or a shutdown waited for a stuck predict for ever)."""
    _model_folder(tmp_path / "stuck", "stuck_model.Stuck", source="""
        import time
        from gpuserve import Model

        class Stuck(Model):
            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                time.sleep(300)
        """)
    disk = DiskRepository(tmp_path)
    disk.workers_timeout = 1.0
    registry = disk.populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        model = registry.get_model("stuck")
        pid = model.worker_pids[0]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.post, "/v1/models/stuck:predict", json={"instances": [1]})
            time.sleep(1.0)  # the request is in the worker's predict
            start = time.monotonic()
            assert client.post("/v2/repository/models/stuck/unload").status_code == 200
            assert time.monotonic() - start < 10
            assert pending.result(30).status_code >= 500  # answered, not dropped
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"worker {pid} still alive")


def test_worker_metric_files_go_below_metrics_dir(tmp_path):
    """MLServer's metrics_dir: where the workers' Prometheus files live (one folder per model below it)."""
    _model_folder(tmp_path / "models" / "counted", "counted_model.Counted", source="""
        from gpuserve import Model

        class Counted(Model):
            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                return {"predictions": [1]}
        """)
    disk = DiskRepository(tmp_path / "models")
    disk.metrics_dir = str(tmp_path / "metrics")
    model = disk.populate(ModelRepository()).get_model("counted")
    try:
        model.load()
        assert os.path.dirname(model.metrics_dir) == str(tmp_path / "metrics")
    finally:
        model.stop()
    assert os.listdir(tmp_path / "metrics") == []  # the model's folder goes with it


def test_a_worker_sees_what_each_request_of_a_merged_one_brought(tmp_path, http):
    """Adaptive batching merges requests in the server process; a runtime in a worker reads MERGED_ROWS there
    as it would in process (the HuggingFace runtime's one-text-each batches depend on it)."""
    _model_folder(tmp_path / "rows", "rows_model.Rows", max_batch_size=4, max_batch_time=0.5, source="""
        import numpy as np
        from mlserver import MLModel
        from mlserver.codecs import NumpyCodec
        from mlserver.types import InferenceResponse

        from gpuserve.adaptive import MERGED_ROWS

        class Rows(MLModel):
            async def predict(self, payload):
                rows = payload.inputs[0].shape[0]
                merged = MERGED_ROWS.get() or (rows,)
                seen = np.full((rows, 1), len(merged), dtype=np.int64)
                return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("requests", seen)])
        """)
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda _: client.post("/v2/models/rows/infer", json=body).json(), range(4)))
    seen = [reply["outputs"][0]["data"][0] for reply in replies]
    assert max(seen) > 1, replies  # merged in the server, and the worker was told so


def test_a_request_that_goes_away_leaves_its_worker_serving(tmp_path, http):
    """The server cancels a request whose client went away; the worker still answers it, and that answer is read
    and dropped, so the worker (the only one) serves the next request rather than staying taken."""
    _model_folder(tmp_path / "slow", "slow_model.Slow", source="""
        import time
        from gpuserve import Model

        class Slow(Model):
            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                time.sleep(float(payload["instances"][0]))
                return {"predictions": payload["instances"]}
        """)
    import httpx

    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        model = registry.get_model("slow")
        for _ in range(3):
            try:
                client.post("/v1/models/slow:predict", json={"instances": [0.6]}, timeout=0.1)
            except httpx.TimeoutException:
                pass
        deadline = time.monotonic() + 10
        while model.inflight and time.monotonic() < deadline:  # the cancelled requests are let go at once
            time.sleep(0.01)
        assert model.inflight == 0
        reply = client.post("/v1/models/slow:predict", json={"instances": [0.0]}, timeout=10)
        assert reply.status_code == 200 and reply.json()["predictions"] == [0.0]
        assert len(model.worker_pids) == 1 and model.restarts == 0
