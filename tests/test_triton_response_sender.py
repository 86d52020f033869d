"""Response senders as Triton's python_backend stub runs them (qa/L0_backend_python/response_sender, 19 of
21 there, 2 skipped by Triton itself): an `async def execute` runs on an event loop of its instance that keeps
running, so a decoupled model's task that answers after execute returned still answers (it hung the stream
before); a decoupled execute that returns responses fails its requests with Triton's sentence; a non-decoupled
model may answer through its sender during or after execute, once, a final flag alone being an error."""

import queue
import textwrap

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

CONFIG = """
backend: "python"
max_batch_size: 0
input [ { name: "MODE", data_type: TYPE_INT32, dims: [ 1 ] } ]
output [ { name: "OUT", data_type: TYPE_INT32, dims: [ 1 ] } ]
"""

MODEL = """
import asyncio
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def answer(value):
    return pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([value], np.int32))])


class TritonPythonModel:
    def initialize(self, args):
        self.tasks = set()

    async def later(self, sender, value):
        await asyncio.sleep(0.05)
        sender.send(answer(value), flags=FINAL)

    async def execute(self, requests):
        returned = []
        for request in requests:
            mode = int(pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0])
            sender = request.get_response_sender()
            returned.append(answer(mode))
            if mode == 1:  # answered by a task that outlives execute
                task = asyncio.get_running_loop().create_task(self.later(sender, 11))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif mode == 3:  # a non-decoupled model answers from a thread, after execute returned
                threading.Thread(target=lambda s=sender: (time.sleep(0.05), s.send(answer(33)))).start()
            elif mode == 4:  # a final flag before any response
                sender.send(flags=FINAL)
            elif mode == 5:  # two responses: the first answers, the second fails; the returned one is dropped
                sender.send(answer(51))
                sender.send(answer(52))
        if any(int(pb_utils.get_input_tensor_by_name(r, "MODE").as_numpy()[0]) in (1, 3) for r in requests):
            return None
        return returned  # a decoupled model must return None (mode 2)
"""


def _repository(root):
    for name, extra in (("sender", ""), ("sender_decoupled", "model_transaction_policy { decoupled: true }")):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG + extra)
        (root / name / "1" / "model.py").write_text(textwrap.dedent(MODEL))
    return DiskRepository(root).populate(ModelRepository())


def _mode(module, value):
    tensor = module.InferInput("MODE", [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], np.int32))
    return [tensor]


def _stream(url, mode):
    """Every answer of one decoupled request, up to its final one (None if it never ends)."""
    got: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(lambda result, error: got.put((result, error)))
    client.async_stream_infer("sender_decoupled", _mode(grpcclient, mode), enable_empty_final_response=True)
    answers = []
    while True:
        try:
            result, error = got.get(timeout=10)
        except queue.Empty:  # never ended: give up on the stream rather than wait for it
            client.stop_stream(cancel_requests=True)
            return None
        if error is not None:
            answers.append(error.message())
            break
        final = result.get_response().parameters["triton_final_response"].bool_param
        if result.as_numpy("OUT") is not None:
            answers.append(int(result.as_numpy("OUT")[0]))
        if final:
            break
    client.stop_stream()
    client.close()
    return answers


def test_response_senders_as_tritons_stub_runs_them(tmp_path):
    with running_server(repository=_repository(tmp_path)) as server:
        grpc_url = f"127.0.0.1:{server.ports['grpc']}"
        assert _stream(grpc_url, 1) == [11]  # the task ran after execute returned; the stream ended
        [refused] = _stream(grpc_url, 2)
        assert "is using the decoupled mode and the execute function must return None" in refused
        with httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}") as client:
            assert client.infer("sender", _mode(httpclient, 3)).as_numpy("OUT")[0] == 33  # sent after return
            try:
                client.infer("sender", _mode(httpclient, 4))
                raise AssertionError("a final flag before any response must fail the request")
            except InferenceServerException as exc:
                assert "Non-decoupled model cannot send complete final before sending a response" in exc.message()
            assert client.infer("sender", _mode(httpclient, 5)).as_numpy("OUT")[0] == 51  # first sent wins
            assert client.infer("sender", _mode(httpclient, 0)).as_numpy("OUT")[0] == 0  # returned as ever
