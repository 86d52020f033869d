"""A real sticky CUDA error in a served model (a device-side assert from an out-of-range index, which no
process recovers from): the request fails with it, the model stops being ready, and the server stops being
live (503), in a `gpuserve start` of its own, since the error breaks CUDA for its whole process. The CPU
version, with the error's text stood in, is tests/test_device_health.py. Skipped without CUDA."""

import json
import time

import httpx
import pytest

from conftest import free_ports
from test_cli import GPUSERVE, start, stop, wait_ready

pytestmark = pytest.mark.gpu


def test_a_device_side_assert_takes_the_server_out_of_service(tmp_path):
    torch = pytest.importorskip("torch")

    class Lookup(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.arange(40, dtype=torch.float32).reshape(10, 4))

        def forward(self, index):
            return self.table[index]

    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(Lookup().eval(), (torch.zeros(2, dtype=torch.int64),),
                                  dynamic_shapes={"index": {0: batch}})
    (tmp_path / "lookup").mkdir()
    torch.export.save(program, str(tmp_path / "lookup" / "model.pt2"))
    (tmp_path / "lookup" / "model-settings.json").write_text(json.dumps({
        "implementation": "torch", "device": "cuda:0", "parameters": {"uri": "model.pt2"}}))
    port, grpc, metrics = free_ports(3)
    proc = start([*GPUSERVE, "start", str(tmp_path), "--http-port", str(port), "--grpc-port", str(grpc),
                  "--metrics-port", str(metrics)])
    try:
        wait_ready(port, proc)
        base = f"http://127.0.0.1:{port}"

        def ask(index):
            return httpx.post(f"{base}/v2/models/lookup/infer", timeout=60, json={"inputs": [
                {"name": "index", "shape": [1], "datatype": "INT64", "data": [index]}]})

        good = ask(3)
        assert good.status_code == 200 and good.json()["outputs"][0]["data"] == [12.0, 13.0, 14.0, 15.0]
        assert httpx.get(f"{base}/v2/health/live").status_code == 200
        try:
            bad = ask(1000)  # past the table: the indexing kernel's assert fires on the device
            time.sleep(1.0)
            after = ask(3)
            live = httpx.get(f"{base}/v2/health/live")
        except httpx.HTTPError:
            # torch may abort the process from a destructor that meets the broken context (seen on the H200:
            # "terminate called after throwing c10::AcceleratorError"): out of service too, and restarted
            time.sleep(2.0)
            if proc.poll() is None:
                raise
            pytest.skip(f"the server process ended after the error (exit {proc.returncode})")
        assert bad.status_code == 500 and "device-side assert" in bad.json()["error"], bad.text
        assert after.status_code == 503 and "restart" in after.json()["error"], after.text
        assert live.status_code == 503 and "cuda:0" in live.json()["error"], live.text
    finally:
        if proc.poll() is None:
            stop(proc)
