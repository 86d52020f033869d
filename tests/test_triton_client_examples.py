"""tritonclient's own Python examples (src/python/examples in Triton's client repository), re-expressed:
the same calls and the same checks, against `gpuserve start` on a repository of the models they ask for
(tests/triton_example_models.py builds them as Triton's example repository declares them)."""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import time
import urllib.request
from functools import partial

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from conftest import free_ports
from triton_example_models import LABELS, build_repository


# the server: `gpuserve start` on that repository ----------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = build_repository(tmp_path_factory.mktemp("examples") / "repo")
    control = root / "simple_control"  # model control runs on a copy, so `simple` serves the other tests
    control.mkdir()
    (control / "1").mkdir()
    (control / "1" / "model.onnx").write_bytes((root / "simple" / "1" / "model.onnx").read_bytes())
    (control / "config.pbtxt").write_text((root / "simple" / "config.pbtxt").read_text().replace(
        'name: "simple"', 'name: "simple_control"'))
    http, grpc, metrics = free_ports(3)
    log = root.parent / "server.log"
    with open(log, "w") as out:  # the examples check `name == "triton"`: a Triton user sets the name so
        proc = subprocess.Popen([sys.executable, "-m", "gpuserve.cli", "start", str(root), "--host", "127.0.0.1",
                                 "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "GPUSERVE_SERVER_NAME": "triton"})
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield {"http": f"127.0.0.1:{http}", "grpc": f"127.0.0.1:{grpc}", "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(params=["http", "grpc"])
def client(request, server):
    module = httpclient if request.param == "http" else grpcclient
    with module.InferenceServerClient(server[request.param]) as c:
        c.module = module
        yield c


def add_sub_inputs(module, second=1):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), second, dtype=np.int32)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a, b


def check_add_sub(result, a, b):
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


# simple_*_health_metadata, simple_*_infer_client, simple_*_async_infer_client, keepalive, custom args -------

def test_health_and_metadata(client):
    if client.module is httpclient:
        assert client.is_server_live(query_params={"test_1": 1, "test_2": 2})
        meta = client.get_server_metadata()
        assert meta["name"] == "triton"
        assert client.get_model_metadata("simple", query_params={"test_1": 1})["name"] == "simple"
    else:
        assert client.is_server_live(headers={"test": "1", "dummy": "2"})
        assert client.get_server_metadata().name == "triton"
        assert client.get_model_metadata("simple", headers={"test": "1"}).name == "simple"
        assert client.get_model_config("simple").config.name == "simple"
    assert client.is_server_ready() and client.is_model_ready("simple")
    for call in (lambda: client.get_model_metadata("wrong_model_name"),
                 lambda: client.infer("wrong_model_name", add_sub_inputs(client.module)[0])):
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.message().startswith("Request for unknown model"), caught.value.message()


def test_infer_with_and_without_requested_outputs(client, server):
    m = client.module
    inputs, a, b = add_sub_inputs(m, second=-1)
    if m is httpclient:
        inputs[0].set_data_from_numpy(a, binary_data=False)
        outputs = [m.InferRequestedOutput("OUTPUT0", binary_data=True),
                   m.InferRequestedOutput("OUTPUT1", binary_data=False)]
        for compression in (None, "gzip", "deflate"):
            check_add_sub(client.infer("simple", inputs, outputs=outputs, query_params={"test_1": 1},
                                       request_compression_algorithm=compression,
                                       response_compression_algorithm=compression), a, b)
        stats = client.get_inference_statistics("simple")
        assert len(stats["model_stats"]) == 1
        assert list(stats["model_stats"][0])[:9] == ["name", "version", "last_inference", "inference_count",
                                                     "execution_count", "inference_stats", "response_stats",
                                                     "batch_stats", "memory_usage"]  # printed as Triton's
    else:
        outputs = [m.InferRequestedOutput("OUTPUT0"), m.InferRequestedOutput("OUTPUT1")]
        for compression in (None, "gzip", "deflate"):
            check_add_sub(client.infer("simple", inputs, outputs=outputs, headers={"test": "1"}, client_timeout=10,
                                       compression_algorithm=compression), a, b)
        assert len(client.get_inference_statistics("simple").model_stats) == 1
    check_add_sub(client.infer("simple", inputs), a, b)


def test_async_infer(server):
    inputs, a, b = add_sub_inputs(httpclient)
    with httpclient.InferenceServerClient(server["http"], concurrency=2) as c:
        for pending in [c.async_infer("simple", inputs) for _ in range(2)]:
            check_add_sub(pending.get_result(), a, b)
    inputs, a, b = add_sub_inputs(grpcclient)
    done = queue.Queue()
    with grpcclient.InferenceServerClient(server["grpc"]) as c:
        c.async_infer("simple", inputs, callback=lambda result, error: done.put((result, error)), client_timeout=10)
        result, error = done.get(timeout=10)
    assert error is None
    check_add_sub(result, a, b)


def test_grpc_keepalive_and_channel_args(server):
    keepalive = grpcclient.KeepAliveOptions(keepalive_time_ms=2**31 - 1, keepalive_timeout_ms=20000,
                                            keepalive_permit_without_calls=False, http2_max_pings_without_data=2)
    args = [("grpc.max_send_message_length", 1024 * 1024), ("grpc.max_receive_message_length", 1024 * 1024),
            ("grpc.keepalive_time_ms", 2**31 - 1), ("grpc.dns_enable_srv_queries", 1)]
    for options in ({"keepalive_options": keepalive}, {"channel_args": args}):
        with grpcclient.InferenceServerClient(server["grpc"], **options) as c:
            inputs, a, b = add_sub_inputs(grpcclient)
            check_add_sub(c.infer("simple", inputs, headers={"test": "1"}), a, b)


def test_aio_clients(server):
    async def main():
        async with httpaio.InferenceServerClient(server["http"]) as h:
            inputs, a, b = add_sub_inputs(httpaio, second=-1)
            first, second = await asyncio.gather(h.infer("simple", inputs), h.infer("simple", inputs))
            check_add_sub(first, a, b)
            check_add_sub(second, a, b)
            assert len((await h.get_inference_statistics("simple"))["model_stats"]) == 1
            with pytest.raises(InferenceServerException) as caught:
                await h.infer("wrong_model_name", inputs)
            assert caught.value.message().startswith("Request for unknown model")
        async with grpcaio.InferenceServerClient(server["grpc"]) as g:
            inputs, a, b = add_sub_inputs(grpcaio)
            both = await asyncio.gather(g.infer("simple", inputs), g.infer("simple", inputs, headers={"t": "1"}))
            for result in both:
                check_add_sub(result, a, b)
            assert len((await g.get_inference_statistics("simple")).model_stats) == 1

    asyncio.run(main())


# simple_*_string_infer_client, grpc_explicit_*_content_client ----------------------------------------------

def test_strings_and_identity(client):
    m, http = client.module, client.module is httpclient
    texts = [np.array([str(x).encode() for x in row], dtype=object).reshape(1, 16)
             for row in (range(16), [1] * 16)]
    inputs = [m.InferInput(f"INPUT{i}", [1, 16], "BYTES") for i in range(2)]
    for i, text in enumerate(texts):
        inputs[i].set_data_from_numpy(text, **({"binary_data": i == 0} if http else {}))
    outputs = [m.InferRequestedOutput(f"OUTPUT{i}", **({"binary_data": i == 0} if http else {})) for i in range(2)]
    result = client.infer("simple_string", inputs, outputs=outputs)
    assert [int(x) for x in result.as_numpy("OUTPUT0")[0]] == list(range(1, 17))
    assert [int(x) for x in result.as_numpy("OUTPUT1")[0]] == list(range(-1, 15))
    for sent in (np.array([b"he\x00llo"] * 16, dtype=object).reshape(1, 16),
                 np.array([b"\x00\x01\x02\x03"] * 16, dtype=np.bytes_).reshape(1, 16)):
        for binary in ((True, False) if http else (None,)):
            tensor = m.InferInput("INPUT0", list(sent.shape), "BYTES")
            tensor.set_data_from_numpy(sent, **({"binary_data": binary} if http else {}))
            wanted = m.InferRequestedOutput("OUTPUT0", **({"binary_data": binary} if http else {}))
            back = client.infer("simple_identity", [tensor], outputs=[wanted]).as_numpy("OUTPUT0")
            if sent.dtype == object:
                if binary is False:  # JSON answers strings; the example re-encodes them
                    back = np.array([x if isinstance(x, bytes) else str(x).encode() for x in back.ravel()],
                                    dtype=object).reshape(1, 16)
                np.testing.assert_array_equal(back, sent)
            else:
                np.testing.assert_array_equal(np.char.encode(back.astype(str)), sent)


def stub(server):
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server["grpc"]))


@pytest.mark.parametrize("model, datatype, field", [("simple", "INT32", "int_contents"),
                                                    ("simple_int8", "INT8", "int_contents"),
                                                    ("simple_string", "BYTES", "bytes_contents")])
def test_explicit_contents_get_raw_outputs_as_from_triton(server, model, datatype, field):
    """Triton answers a config.pbtxt model in raw_output_contents even when the request sent typed contents."""
    import grpc
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    for name, values in (("INPUT0", list(range(16))), ("INPUT1", [1] * 16)):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[1, 16])
        getattr(tensor.contents, field).extend([str(v).encode() for v in values] if datatype == "BYTES" else values)
    request.outputs.add(name="OUTPUT0")
    request.outputs.add(name="OUTPUT1")
    response = stub(server).ModelInfer(request)
    assert len(response.raw_output_contents) == 2 and not response.outputs[0].HasField("contents")
    decode = (utils.deserialize_bytes_tensor if datatype == "BYTES"
              else partial(np.frombuffer, dtype=utils.triton_to_np_dtype(datatype)))
    total, diff = (np.resize(decode(raw), [1, 16]) for raw in response.raw_output_contents)
    assert [int(x) for x in total[0]] == [i + 1 for i in range(16)]
    assert [int(x) for x in diff[0]] == [i - 1 for i in range(16)]
    if model == "simple_int8":
        request.model_version = "wrong_specification"
        with pytest.raises(grpc.RpcError) as caught:
            stub(server).ModelInfer(request)
        assert caught.value.details() == ("failed to get model version from specified version string "  # Triton 2.51's
                                          "'wrong_specification' (details: stol), version should be an integral "
                                          "value > 0")
    if model == "simple":  # raw entries beside typed contents: Triton's words
        request.raw_input_contents.append(np.arange(8).tobytes())
        del request.inputs[0].contents.int_contents[:8]
        with pytest.raises(grpc.RpcError) as caught:
            stub(server).ModelInfer(request)
        assert ("contents field must not be specified when using raw_input_contents for 'INPUT0' for model "
                "'simple'") in str(caught.value)


# simple_*_sequence_*_infer_client (plain and -d, sync, stream, aio stream) --------------------------------

VALUES = [11, 7, 5, 3, 2, 0, 1]


def expected(dyna, ids):
    """The examples' expectations for the three sequences, step by step."""
    int0 = [1] + VALUES
    int1 = [101] + [-v for v in VALUES]
    if not dyna:
        return int0, int1, [21] + [-v for v in VALUES]
    text = [20]
    for v in VALUES:
        text.append(text[-1] - v)
    return (int0[:-1] + [int0[-1] + ids[0]], int1[:-1] + [int1[-1] + ids[1]], text[:-1] + [text[-1] + int(ids[2])])


def sequence_requests(module, dyna, offset=0):
    ids = [1000 + offset * 2, 1001 + offset * 2, str(1002 + offset) if dyna else "3f1b2c4d-string-id"]
    models = ["simple_dyna_sequence" if dyna else "simple_sequence"] * 2 + \
        ["simple_string_dyna_sequence" if dyna else "simple_sequence"]
    firsts = [0, 100, 20]
    for seq, (sequence_id, model, first) in enumerate(zip(ids, models, firsts)):
        values = [first] + ([-v for v in VALUES] if seq else VALUES)
        for step, value in enumerate(values):
            tensor = module.InferInput("INPUT", [1, 1], "INT32")
            tensor.set_data_from_numpy(np.full((1, 1), value, np.int32))
            yield seq, dict(model_name=model, inputs=[tensor], outputs=[module.InferRequestedOutput("OUTPUT")],
                            request_id=f"{sequence_id}_{step + 1}", sequence_id=sequence_id,
                            sequence_start=step == 0, sequence_end=step == len(values) - 1)
    yield None, ids


@pytest.mark.parametrize("dyna", [False, True], ids=["sequence", "dyna"])
def test_sequences_sync(client, dyna):
    got = [[], [], []]
    for seq, kwargs in sequence_requests(client.module, dyna):
        if seq is None:
            assert tuple(got) == expected(dyna, kwargs)
            break
        got[seq].append(int(client.infer(**kwargs).as_numpy("OUTPUT")[0][0]))


@pytest.mark.parametrize("dyna", [False, True], ids=["sequence", "dyna"])
def test_sequences_on_a_grpc_stream(server, dyna):
    answers = queue.Queue()
    got, ids = [[], [], []], None
    with grpcclient.InferenceServerClient(server["grpc"]) as c:
        c.start_stream(callback=lambda result, error: answers.put((result, error)), stream_timeout=30)
        count = 0
        for seq, kwargs in sequence_requests(grpcclient, dyna, offset=3):
            if seq is None:
                ids = kwargs
                break
            c.async_stream_infer(**kwargs)
            count += 1
        for _ in range(count):
            result, error = answers.get(timeout=30)
            assert error is None, error
            prefix = result.get_response().id.split("_")[0]
            got[[str(i) for i in ids].index(prefix)].append(int(result.as_numpy("OUTPUT")[0][0]))
    assert tuple(got) == expected(dyna, ids)


def test_sequences_on_a_grpc_aio_stream(server):
    async def main():
        got, requests = [[], [], []], list(sequence_requests(grpcaio, True, offset=7))
        ids = requests.pop()[1]

        async def send():
            for _, kwargs in requests:
                yield kwargs

        async with grpcaio.InferenceServerClient(server["grpc"]) as c:
            async for result, error in c.stream_infer(inputs_iterator=send(), stream_timeout=30):
                assert error is None, error
                prefix = result.get_response().id.split("_")[0]
                got[[str(i) for i in ids].index(prefix)].append(int(result.as_numpy("OUTPUT")[0][0]))
        assert tuple(got) == expected(True, ids)

    asyncio.run(main())


# simple_*_shm_client, simple_*_shm_string_client, reuse_infer_objects_client --------------------------------

def test_system_shared_memory(client):
    m, key = client.module, f"/gpuserve_examples_{os.getpid()}_{client.module.__name__.split('.')[-1]}"
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()  # as the examples do first: no GPU here, and still no error
    a, b = np.arange(16, dtype=np.int32), np.ones(16, dtype=np.int32)
    size = a.nbytes
    regions = [shm.create_shared_memory_region(f"{key}_in", f"{key}_in", size * 2),
               shm.create_shared_memory_region(f"{key}_out", f"{key}_out", size * 2)]
    try:
        shm.set_shared_memory_region(regions[0], [a])
        shm.set_shared_memory_region(regions[0], [b], offset=size)
        client.register_system_shared_memory("input_data", f"{key}_in", size * 2)
        client.register_system_shared_memory("output_data", f"{key}_out", size * 2)
        for reuse in (True, False, True):  # reuse_infer_objects_client: the same objects with and without shm
            inputs = [m.InferInput("INPUT0", [1, 16], "INT32"), m.InferInput("INPUT1", [1, 16], "INT32")]
            outputs = [m.InferRequestedOutput("OUTPUT0"), m.InferRequestedOutput("OUTPUT1")]
            if reuse:
                for i, tensor in enumerate(inputs):
                    tensor.set_shared_memory("input_data", size, offset=i * size)
                for i, tensor in enumerate(outputs):
                    tensor.set_shared_memory("output_data", size, offset=i * size)
                result = client.infer("simple", inputs, outputs=outputs)
                out = [shm.get_contents_as_numpy(regions[1], np.int32, [1, 16], offset=i * size) for i in range(2)]
                assert result.get_output("OUTPUT0") is not None
            else:
                inputs[0].set_data_from_numpy(a.reshape(1, 16))
                inputs[1].set_data_from_numpy(b.reshape(1, 16) * 2)
                result = client.infer("simple", inputs, outputs=outputs)
                out = [result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")]
            second = b * (1 if reuse else 2)
            np.testing.assert_array_equal(out[0][0], a + second)
            np.testing.assert_array_equal(out[1][0], a - second)
        status = client.get_system_shared_memory_status()
        assert len(status if m is httpclient else status.regions) == 2
    finally:
        client.unregister_system_shared_memory()
        for region in regions:
            shm.destroy_shared_memory_region(region)


def test_system_shared_memory_strings(server):
    key = f"/gpuserve_examples_str_{os.getpid()}"
    numbers = [np.arange(16, dtype=np.int32), np.ones(16, dtype=np.int32)]
    texts = [np.array([str(x).encode() for x in n], dtype=object) for n in numbers]
    sent = [utils.serialize_byte_tensor(t) for t in texts]
    wanted = [utils.serialize_byte_tensor(np.array([str(x).encode() for x in f(*numbers)], dtype=object))
              for f in (np.add, np.subtract)]
    sizes = [utils.serialized_byte_size(x) for x in sent + wanted]
    names = ["input0_data", "input1_data", "output0_data", "output1_data"]
    regions = [shm.create_shared_memory_region(n, f"{key}_{n}", size) for n, size in zip(names, sizes)]
    with grpcclient.InferenceServerClient(server["grpc"]) as c:
        try:
            c.unregister_system_shared_memory()
            for region, data in zip(regions, sent):
                shm.set_shared_memory_region(region, [data])
            for name, size in zip(names, sizes):
                c.register_system_shared_memory(name, f"{key}_{name}", size)
            inputs = [grpcclient.InferInput(f"INPUT{i}", [1, 16], "BYTES") for i in range(2)]
            outputs = [grpcclient.InferRequestedOutput(f"OUTPUT{i}") for i in range(2)]
            for i in range(2):
                inputs[i].set_shared_memory(names[i], sizes[i])
                outputs[i].set_shared_memory(names[2 + i], sizes[2 + i])
            result = c.infer("simple_string", inputs, outputs=outputs)
            for i in range(2):
                output = result.get_output(f"OUTPUT{i}")
                got = shm.get_contents_as_numpy(regions[2 + i], utils.triton_to_np_dtype(output.datatype), output.shape)
                assert list(got[0]) == [str(x).encode() for x in (np.add, np.subtract)[i](*numbers)]
        finally:
            c.unregister_system_shared_memory()
            for region in regions:
                shm.destroy_shared_memory_region(region)


# simple_grpc_custom_repeat (decoupled), memory_growth_test ---------------------------------------------------

def test_decoupled_repeat_on_a_stream(server):
    answers = queue.Queue()
    values = np.arange(100, 110, dtype=np.int32)
    inputs = [grpcclient.InferInput("IN", [10], "INT32"), grpcclient.InferInput("DELAY", [10], "UINT32"),
              grpcclient.InferInput("WAIT", [1], "UINT32")]
    inputs[0].set_data_from_numpy(values)
    inputs[1].set_data_from_numpy(np.full(10, 5, np.uint32))  # the example's 1000 ms each, shortened
    inputs[2].set_data_from_numpy(np.array([5], np.uint32))
    with grpcclient.InferenceServerClient(server["grpc"]) as c:
        c.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), answers))
        c.async_stream_infer("repeat_int32", inputs, outputs=[grpcclient.InferRequestedOutput("OUT")])
        got = []
        for _ in range(10):
            result, error = answers.get(timeout=30)
            assert error is None, error
            got.append(result.as_numpy("OUT"))
    assert all(len(one) == 1 for one in got) and [int(one[0]) for one in got] == list(values)


def test_a_new_client_per_request(server):
    data = np.arange(16, dtype=np.int32).reshape(1, 16)
    for module, url in ((httpclient, server["http"]), (grpcclient, server["grpc"])):
        for _ in range(5):
            c = module.InferenceServerClient(url)
            tensor = module.InferInput("INPUT0", [1, 16], "INT32")
            tensor.set_data_from_numpy(data)
            out = c.infer("custom_identity_int32", [tensor], outputs=[module.InferRequestedOutput("OUTPUT0")])
            out = out.as_numpy("OUTPUT0")
            assert out.dtype == data.dtype and out.shape == data.shape and np.array_equal(out, data)


# image_client, grpc_image_client, grpc_client (densenet_onnx) ------------------------------------------------

def image_scores(image):
    weight = np.random.default_rng(0).normal(size=(LABELS, 3, 1, 1)).astype(np.float32)
    return weight[:, :, 0, 0] @ image.mean(axis=(1, 2))


@pytest.mark.parametrize("transport, how", [("http", "sync"), ("http", "async"), ("grpc", "sync"),
                                            ("grpc", "async"), ("grpc", "stream")])  # streaming: gRPC only
def test_image_client_classifies(server, transport, how):
    grpc = transport == "grpc"
    m = grpcclient if grpc else httpclient
    client = m.InferenceServerClient(server[transport], **({} if grpc else {"concurrency": 20}))
    meta, config = client.get_model_metadata("densenet_onnx"), client.get_model_config("densenet_onnx")
    if grpc:
        config = config.config
        assert config.input[0].format == config.input[0].FORMAT_NCHW and config.max_batch_size == 0
        shape, datatype = list(meta.inputs[0].shape), meta.inputs[0].datatype
        assert meta.outputs[0].datatype == "FP32" and meta.outputs[0].name == "fc6_1"
    else:
        assert config["input"][0]["format"] == "FORMAT_NCHW" and config["max_batch_size"] == 0
        shape, datatype = meta["inputs"][0]["shape"], meta["inputs"][0]["datatype"]
    assert shape == [3, 224, 224] and datatype == "FP32"
    image = (np.random.default_rng(1).integers(0, 256, (3, 224, 224)) / 127.5 - 1).astype(np.float32)  # INCEPTION
    tensor = m.InferInput("data_0", shape, datatype)
    tensor.set_data_from_numpy(image)
    outputs = [m.InferRequestedOutput("fc6_1", class_count=3)]
    if how == "sync":
        result = client.infer("densenet_onnx", [tensor], request_id="1", outputs=outputs)
    elif how == "async" and not grpc:
        result = client.async_infer("densenet_onnx", [tensor], request_id="1", outputs=outputs).get_result()
    else:
        done = queue.Queue()
        callback = partial(lambda q, result, error: q.put((result, error)), done)
        if how == "stream":
            client.start_stream(callback)
            client.async_stream_infer("densenet_onnx", [tensor], request_id="1", outputs=outputs)
        else:
            client.async_infer("densenet_onnx", [tensor], callback, request_id="1", outputs=outputs)
        result, error = done.get(timeout=30)
        if how == "stream":
            client.stop_stream()
        assert error is None, error
    assert (result.get_response().id if grpc else result.get_response()["id"]) == "1"
    top = [x.decode().split(":") for x in result.as_numpy("fc6_1")]
    order = np.argsort(-image_scores(image))[:3]
    assert [int(index) for _, index, _ in top] == list(order)
    assert [label for _, _, label in top] == [f"CLASS_{i}" for i in order]
    client.close()


def test_grpc_client_with_the_generated_stubs(server):
    from tritonclient.grpc import service_pb2

    channel = stub(server)
    assert channel.ServerLive(service_pb2.ServerLiveRequest()).live
    assert channel.ModelReady(service_pb2.ModelReadyRequest(name="densenet_onnx", version="")).ready
    assert channel.ModelConfig(service_pb2.ModelConfigRequest(name="densenet_onnx")).config.name == "densenet_onnx"
    request = service_pb2.ModelInferRequest(model_name="densenet_onnx", id="my request id")
    request.inputs.add(name="data_0", datatype="FP32", shape=[3, 224, 224])
    request.outputs.add(name="fc6_1")
    request.raw_input_contents.append(b"a" * 602112)
    response = channel.ModelInfer(request)
    assert response.id == "my request id" and list(response.outputs[0].shape) == [1000]
    image = np.frombuffer(b"a" * 602112, np.float32).reshape(3, 224, 224)
    np.testing.assert_allclose(np.frombuffer(response.raw_output_contents[0], np.float32), image_scores(image),
                               rtol=1e-4)


# simple_*_model_control (on a copy of simple; gpuserve's default mode allows load and unload) ---------------

def test_model_control(client, server):
    grpc, name = client.module is grpcclient, "simple_control"
    index = client.get_model_repository_index()
    assert name in [e.name if grpc else e["name"] for e in (index.models if grpc else index)]
    client.load_model(name)
    assert client.is_model_ready(name)
    with pytest.raises(InferenceServerException) as caught:
        client.load_model(name, config='"parameters": {"config": {{"max_batch_size": "16"}}}')
    assert "failed to load" in caught.value.message()
    assert "Invalid config override" in server["log"].read_text()
    client.load_model(name, config='{"max_batch_size":"16"}')  # no platform: the version's model.onnx says it
    config = client.get_model_config(name)
    assert (config.config.max_batch_size if grpc else config["max_batch_size"]) == 16
    client.unload_model(name)
    assert not client.is_model_ready(name)
    if grpc:
        with pytest.raises(InferenceServerException) as caught:
            client.load_model(name, config="{}", files={"file:" + "A" * 256: b"a"})
        assert caught.value.status() == "StatusCode.INTERNAL"
        assert "failed to poll from model repository" in caught.value.message()
        assert client.is_server_live()
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("wrong_model_name")
    assert "failed to load" in caught.value.message()


def test_ensemble_image_client(client):
    grpc, m = client.module is grpcclient, client.module
    meta, config = client.get_model_metadata("preprocess_inception_ensemble"), \
        client.get_model_config("preprocess_inception_ensemble")
    batch = config.config.max_batch_size if grpc else config["max_batch_size"]
    names = [o.name for o in meta.outputs] if grpc else [o["name"] for o in meta["outputs"]]
    files = [bytes(range(7, 250)), b"\x89PNG not really an image" * 5]
    assert len(files) <= batch and names == ["OUTPUT"]
    data = np.stack([np.array([f], dtype=bytes) for f in files], axis=0)
    tensor = m.InferInput("INPUT", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data, **({} if grpc else {"binary_data": True}))
    outputs = [m.InferRequestedOutput(n, class_count=2, **({} if grpc else {"binary_data": True})) for n in names]
    result = client.infer("preprocess_inception_ensemble", [tensor], outputs=outputs).as_numpy("OUTPUT")
    assert len(result) == len(files)
    for got, raw in zip(result, files):
        image = np.resize(np.frombuffer(raw, np.uint8), (3, 16, 16)) / 127.5 - 1
        order = np.argsort(-image_scores(image.astype(np.float32)))[:2]
        assert ["".join(chr(x) for x in r).split(":")[1:] for r in got] == [[str(i), f"CLASS_{i}"] for i in order]
