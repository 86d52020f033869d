"""perf_analyzer's CUDA shared memory on a real GPU: it cudaMallocs a region for each input and output, registers
their IPC handles, and gpuserve (this process: the handles open in any process but the one that made them) reads
the inputs from device memory and writes the outputs there, request after request, over HTTP and gRPC. Skipped
without CUDA (conftest) or without perf_analyzer; benchmarks/gpu/verify_all.sh brings it to the GPU machine."""

import pytest

from test_perf_analyzer import PERF_ANALYZER, counts, profile, server  # noqa: F401 (server: the fixture)

pytest.importorskip("onnx")  # the fixture's models are built with its helper API

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(PERF_ANALYZER is None, reason="perf_analyzer is not installed "
                                 "(bash scripts/install_perf_analyzer.sh; verify_all.sh unpacks it from .whl/)")]


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "grpc"])
def test_cuda_shared_memory_inputs_and_outputs(server, grpc):  # noqa: F811
    numbers = counts(profile(server, "simple", "--shared-memory", "cuda", "--output-shared-memory-size", "64",
                             grpc=grpc))
    assert numbers["Request count"] > 0 and numbers["Inference count"] == numbers["Successful request count"]


def test_cuda_shared_memory_strings_and_batches(server):  # noqa: F811
    profile(server, "strings", "--shared-memory", "cuda", "--output-shared-memory-size", "256")
    numbers = counts(profile(server, "simple", "-b", "4", "--shared-memory", "cuda", grpc=True))
    assert numbers["Inference count"] == 4 * numbers["Successful request count"]
