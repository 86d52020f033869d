"""Parallel workers: a CPU-bound custom model served by two spawned processes, on both cores."""

import concurrent.futures
import json
import os
import textwrap

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository


def test_cpu_bound_model_runs_in_two_worker_processes(tmp_path, http):
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "model-settings.json").write_text(json.dumps(
        {"name": "busy", "implementation": "busy_model.Busy", "parallel_workers": 2}))
    (folder / "busy_model.py").write_text(textwrap.dedent("""
        import os
        import time
        from gpuserve import Model

        class Busy(Model):
            def load(self):
                self.ready = True

            def predict(self, payload, headers=None):
                n = int(payload["instances"][0])
                total = sum(i * i for i in range(n))  # pure-Python CPU work: holds the GIL
                time.sleep(0.1)  # long enough that concurrent requests find the other worker free
                return {"predictions": [total], "pid": os.getpid()}

            def get_input_types(self):
                return [{"name": "n", "datatype": "INT64", "shape": [1]}]
        """))
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
        bad = client.post("/v1/models/busy:predict", json={"rows": []})
        assert bad.status_code == 500 and "instances" in bad.json()["error"]
        assert client.post("/v1/models/busy:predict", json={"instances": [10]}).json()["predictions"] == [285]


def test_each_worker_imports_its_own_folders_module(tmp_path, http):
    # MLServer's layout: a models.py next to each model-settings.json, the same module name in every folder.
    # Spawned workers inherit the parent's sys.path, where the folders imported before theirs come first.
    for letter in "abc":
        folder = tmp_path / letter
        folder.mkdir()
        (folder / "model-settings.json").write_text(json.dumps(
            {"name": f"model-{letter}", "implementation": f"models.Runtime{letter.upper()}", "parallel_workers": 1}))
        (folder / "models.py").write_text(textwrap.dedent(f"""
            from gpuserve import Model

            class Runtime{letter.upper()}(Model):
                def load(self):
                    self.ready = True

                def predict(self, payload, headers=None):
                    return {{"predictions": ["{letter}"]}}
            """))
    registry = DiskRepository(tmp_path).populate(ModelRepository())
    with running_server(repository=registry) as server:
        client = http(server)
        for letter in "abc":
            reply = client.post(f"/v1/models/model-{letter}:predict", json={"instances": [1]})
            assert reply.status_code == 200 and reply.json()["predictions"] == [letter], reply.text
