"""Models shaped like the ones Triton's qa generators write (qa/common/gen_qa_*.py), served from a
config.pbtxt repository and driven with tritonclient, for what Triton's qa tests (L0_infer,
L0_implicit_state, L0_sequence_batcher) found missing. Each model is built here, small."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

torch = pytest.importorskip("torch")

STRING_CONFIG = """
name: "{name}"
platform: "pytorch_libtorch"
max_batch_size: 0
input [ {{ name: "INPUT0", data_type: TYPE_STRING, dims: [ 4 ] }},
        {{ name: "INPUT1", data_type: TYPE_STRING, dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT__0", data_type: TYPE_STRING, dims: [ 4 ] }},
         {{ name: "OUTPUT__1", data_type: TYPE_INT32, dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU }} ]
"""


class _AddSubStrings(torch.nn.Module):
    """As gen_qa_models.py's libtorch string models: numbers as List[str] in, their sum as List[str]
    and their difference as an int32 tensor out."""

    def forward(self, INPUT0: List[str], INPUT1: List[str]) -> Tuple[List[str], torch.Tensor]:
        a = torch.tensor([int(x) for x in INPUT0], dtype=torch.int32)
        b = torch.tensor([int(x) for x in INPUT1], dtype=torch.int32)
        return [str(int(v)) for v in (a + b)], a - b


def _string_repo(root):
    folder = root / "libtorch_nobatch_object_object_int32"
    (folder / "1").mkdir(parents=True)
    torch.jit.script(_AddSubStrings()).save(str(folder / "1" / "model.pt"))
    (folder / "config.pbtxt").write_text(STRING_CONFIG.format(name=folder.name))
    return DiskRepository(root).populate(ModelRepository())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_libtorch_string_inputs_and_outputs(tmp_path, protocol):
    """A TYPE_STRING tensor reaches a TorchScript model as List[str] and a returned List[str] comes back
    as BYTES (Triton's libtorch backend does this; qa/L0_infer test_raw_oo* failed with 500 before)."""
    a = np.array([b"1", b"20", b"-3", b"7"], dtype=object)
    b = np.array([b"2", b"5", b"4", b"7"], dtype=object)
    with running_server(repository=_string_repo(tmp_path)) as server:
        mod = httpclient if protocol == "http" else grpcclient
        port = server.ports["http" if protocol == "http" else "grpc"]
        client = mod.InferenceServerClient(f"127.0.0.1:{port}")
        inputs = [mod.InferInput("INPUT0", [4], "BYTES"), mod.InferInput("INPUT1", [4], "BYTES")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("libtorch_nobatch_object_object_int32", inputs)
        summed = result.as_numpy("OUTPUT__0")
        assert summed.shape == (4,)
        assert [bytes(x) for x in summed] == [b"3", b"25", b"1", b"14"]
        np.testing.assert_array_equal(result.as_numpy("OUTPUT__1"), np.array([-1, 15, -7, 0], np.int32))
