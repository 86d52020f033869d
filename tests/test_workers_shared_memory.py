"""`gpuserve start --workers 2`: system shared-memory regions registered through one worker are known to the
other (gpuserve/shm_mirror.py). Every request here comes on a new connection, so the kernel hands it to
either worker: registering, inferring with inputs and outputs in the regions, status, unregistering and
registering again must read the same whichever worker answers."""

from __future__ import annotations

import json
import textwrap
import time

import numpy as np
import pytest

from conftest import free_ports
from test_cli import GPUSERVE, start, stop, wait_ready

shm = pytest.importorskip("tritonclient.utils.shared_memory")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = textwrap.dedent("""
    import os
    import numpy as np
    from gpuserve import InferOutput, InferResponse, Model

    class Negate(Model):
        def load(self):
            self.ready = True

        def predict(self, payload, headers=None):
            x = payload.inputs[0].as_numpy()
            return InferResponse(payload.id, self.name, [InferOutput.from_numpy("OUT", -x),
                                 InferOutput.from_numpy("PID", np.array([os.getpid()], dtype=np.int64))])
    """)


def _client(port):
    return httpclient.InferenceServerClient(f"127.0.0.1:{port}")  # a new connection each time


def _infer(port, values):
    client = _client(port)
    try:
        given = httpclient.InferInput("IN", [1, 16], "FP32")
        given.set_shared_memory("in", 64)
        out = httpclient.InferRequestedOutput("OUT", binary_data=True)
        out.set_shared_memory("out", 64)
        result = client.infer("negate", [given], outputs=[out, httpclient.InferRequestedOutput("PID")])
        return int(result.as_numpy("PID")[0])
    finally:
        client.close()


def _names(port, fresh=6):
    seen = []
    for _ in range(fresh):
        client = _client(port)
        try:
            seen.append(sorted(region["name"] for region in client.get_system_shared_memory_status()))
        finally:
            client.close()
    return seen


def test_regions_registered_through_one_worker_serve_on_both(tmp_path):
    (tmp_path / "negate").mkdir()
    (tmp_path / "negate" / "model-settings.json").write_text(json.dumps({"implementation": "negate_model.Negate"}))
    (tmp_path / "negate" / "negate_model.py").write_text(MODEL)
    http, grpc, metrics = free_ports(3)
    key = f"/gpuserve_workers_{http}"
    handles = [shm.create_shared_memory_region(name, f"{key}_{name}", 64) for name in ("in", "out")]
    proc = start([*GPUSERVE, "start", str(tmp_path), "--host", "127.0.0.1", "--http-port", str(http),
                  "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--workers", "2"])
    try:
        wait_ready(http, proc)
        values = np.arange(16, dtype=np.float32) + 0.5
        shm.set_shared_memory_region(handles[0], [values.reshape(1, 16)])
        client = _client(http)
        client.register_system_shared_memory("in", f"{key}_in", 64)
        client.register_system_shared_memory("out", f"{key}_out", 64)
        client.close()
        pids, deadline = set(), time.monotonic() + 60
        for attempt in range(400):  # until both workers answered (the kernel picks), and at least 8 calls
            if len(pids) == 2 and attempt >= 8 or time.monotonic() > deadline:
                break
            shm.set_shared_memory_region(handles[1], [np.zeros((1, 16), np.float32)])
            pids.add(_infer(http, values))
            got = shm.get_contents_as_numpy(handles[1], np.float32, [1, 16])
            assert np.array_equal(got, -values.reshape(1, 16))
        assert len(pids) == 2, "both workers answered"
        assert _names(http) == [["in", "out"]] * 6

        client = _client(http)
        with pytest.raises(InferenceServerException, match="already in manager"):
            client.register_system_shared_memory("in", f"{key}_in", 64)
        client.unregister_system_shared_memory("in")
        client.close()
        assert _names(http) == [["out"]] * 6
        for _ in range(6):  # whichever worker: the region is gone
            with pytest.raises(InferenceServerException, match="'in'"):
                _infer(http, values)

        client = _client(http)
        client.register_system_shared_memory("in", f"{key}_in", 64)  # again, perhaps on the other worker
        client.close()
        for _ in range(6):
            _infer(http, values)
        client = _client(http)
        client.unregister_system_shared_memory()  # all of them
        client.close()
        assert _names(http) == [[]] * 6
    finally:
        code = stop(proc)
        for handle in handles:
            shm.destroy_shared_memory_region(handle)
    assert code == 0
