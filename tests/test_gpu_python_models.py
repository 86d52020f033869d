"""Triton Python models on a GPU: a KIND_GPU instance gets Triton's GPU args and hands CUDA tensors back
through DLPack (copied to the host by gpuserve). Skipped without CUDA; run by benchmarks/gpu/verify_all.sh."""

import textwrap

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

pytestmark = pytest.mark.gpu

MODEL = textwrap.dedent("""
    import torch
    import torch.utils.dlpack
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            self.kind, self.device = args["model_instance_kind"], f"cuda:{args['model_instance_device_id']}"

        def execute(self, requests):
            out = []
            for request in requests:
                x = torch.from_numpy(pb_utils.get_input_tensor_by_name(request, "X").as_numpy()).to(self.device)
                y = (x * 2 + 1).contiguous()
                assert y.is_cuda and self.kind == "GPU"
                out.append(pb_utils.InferenceResponse([
                    pb_utils.Tensor.from_dlpack("Y", torch.utils.dlpack.to_dlpack(y))]))
            return out
    """)
CONFIG = """
backend: "python"
max_batch_size: 8
dynamic_batching { }
instance_group [ { kind: KIND_GPU count: 1 } ]
input [ { name: "X" data_type: TYPE_FP32 dims: [ 16 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 16 ] } ]
"""


def test_gpu_instance_answers_from_cuda_tensors(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "cuda_py" / "1").mkdir(parents=True)
    (tmp_path / "cuda_py" / "config.pbtxt").write_text(CONFIG)
    (tmp_path / "cuda_py" / "1" / "model.py").write_text(MODEL)
    registry = DiskRepository(tmp_path, device="auto").populate(ModelRepository())
    x = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    with running_server(repository=registry) as server:
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            tensor = httpclient.InferInput("X", [3, 16], "FP32")
            tensor.set_data_from_numpy(x)
            assert np.allclose(client.infer("cuda_py", [tensor]).as_numpy("Y"), x * 2 + 1, atol=1e-6)
            assert client.get_model_config("cuda_py")["instance_group"][0]["kind"] == "KIND_GPU"
