"""`gpuserve run SCRIPT ARGS...`: a script written for KServe (`from kserve import Model, ModelServer`) or
importing MLServer's modules runs unchanged where those packages are not installed, its own flags read as
KServe reads them, and stops cleanly on SIGTERM."""

import importlib.util
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import free_ports

# the shape of KServe's custom-model docs example, unchanged
KSERVE_SCRIPT = '''
import argparse

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.logging import logger
from kserve.utils.utils import generate_uuid


class CustomModel(Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.load()

    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            x = payload.inputs[0].as_numpy()
            out = InferOutput(name="output-0", shape=list(x.shape), datatype="FP32")
            out.set_data_from_numpy(x * 2)
            return InferResponse(response_id=generate_uuid(), model_name=self.name, infer_outputs=[out])
        logger.info("v1 request")
        return {"predictions": [v * 2 for v in payload["instances"]]}


parser = argparse.ArgumentParser(parents=[model_server.parser])
args, _ = parser.parse_known_args()

if __name__ == "__main__":
    ModelServer().start([CustomModel(args.model_name)])
'''


def _run(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, **kwargs)


@pytest.mark.skipif(importlib.util.find_spec("kserve") is not None, reason="KServe itself is installed here")
def test_a_kserve_script_serves_unchanged(tmp_path):
    script = tmp_path / "custom_model.py"
    script.write_text(KSERVE_SCRIPT)
    http, grpc = free_ports(2)
    process = _run(str(script), "--http_port", str(http), "--grpc_port", str(grpc), "--model_name", "m")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{http}/v2/models/m/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        base = f"http://127.0.0.1:{http}"
        assert httpx.post(f"{base}/v1/models/m:predict", json={"instances": [1, 2]}).json() == \
            {"predictions": [2, 4]}
        answer = httpx.post(f"{base}/v2/models/m/infer",
                            json={"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]})
        assert answer.json()["outputs"][0]["data"] == [2.0, 4.0]
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        tensor = grpcclient.InferInput("x", [2], "FP32")
        tensor.set_data_from_numpy(np.array([1, 2], np.float32))
        assert client.infer("m", [tensor]).as_numpy("output-0").tolist() == [2.0, 4.0]
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    assert "v1 request" in output  # the script's own logger


@pytest.mark.skipif(importlib.util.find_spec("mlserver") is not None, reason="MLServer itself is installed here")
def test_a_script_importing_mlserver_runs_and_its_exit_code_is_kept(tmp_path):
    script = tmp_path / "use_mlserver.py"
    script.write_text(textwrap.dedent('''
        import sys
        import numpy as np
        from mlserver.codecs import NumpyCodec
        from mlserver.types import ResponseOutput

        out = NumpyCodec.encode_output("y", np.array([1, 2], np.int32))
        assert isinstance(out, ResponseOutput) and out.datatype == "INT32", out
        print("args", sys.argv[1:])
        sys.exit(3)
        '''))
    process = _run(str(script), "--flag", "x")
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 3, output
    assert "args ['--flag', 'x']" in output


def test_a_missing_script_is_refused():
    process = _run("/no/such/script.py")
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 2 and "no script /no/such/script.py" in output
