"""gpuserve's `triton_python_backend_utils`: the helpers and classes Triton Python models call directly."""

import json

import numpy as np
import pytest

from gpuserve import triton_pb_utils as pb


def test_tensors_from_arrays_text_and_dlpack():
    text = pb.Tensor("T", np.array(["a", "bé"]))
    assert text.as_numpy().dtype == object and text.as_numpy().tolist() == [b"a", "bé".encode()]
    assert pb.Tensor("X", np.arange(3, dtype=np.float32)).triton_dtype() == "TYPE_FP32"
    torch = pytest.importorskip("torch")
    source = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    from_capsule = pb.Tensor.from_dlpack("Y", torch.utils.dlpack.to_dlpack(source))  # as Triton's examples do
    assert np.array_equal(from_capsule.as_numpy(), source.numpy())
    back = torch.utils.dlpack.from_dlpack(pb.Tensor("Z", np.ones((2, 2), np.int64)).to_dlpack())
    assert back.tolist() == [[1, 1], [1, 1]]
    assert np.array_equal(pb.Tensor.from_dlpack("W", source).as_numpy(), source.numpy())


def test_byte_tensor_round_trip_and_type_helpers():
    values = np.array([b"", b"abc", "z".encode()], dtype=object)
    assert pb.deserialize_bytes_tensor(pb.serialize_byte_tensor(values)).tolist() == values.tolist()
    assert pb.serialize_byte_tensor(np.array([], dtype=object)) == ()
    assert pb.triton_string_to_numpy("TYPE_INT64") is np.int64
    assert pb.triton_to_numpy_type(11) is np.float32 and pb.numpy_to_triton_type(np.bool_) == "TYPE_BOOL"
    config = {"input": [{"name": "A", "data_type": "TYPE_FP32"}], "output": [{"name": "B"}]}
    assert pb.get_input_config_by_name(config, "A")["data_type"] == "TYPE_FP32"
    assert pb.get_output_config_by_name(config, "C") is None
    assert pb.using_decoupled_model_transaction_policy({"model_transaction_policy": {"decoupled": True}})


def test_auto_complete_config_checks_conflicts():
    config = pb.ModelConfig(json.dumps({"name": "m", "max_batch_size": 8,
                                        "input": [{"name": "A", "data_type": "TYPE_FP32", "dims": [4]}]}))
    config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [4], "optional": True})
    config.add_output({"name": "B", "data_type": "TYPE_INT32", "dims": [1]})
    assert config.as_dict()["input"][0]["optional"] is True and config.as_dict()["output"][0]["name"] == "B"
    with pytest.raises(ValueError, match="expects datatype TYPE_FP32"):
        config.add_input({"name": "A", "data_type": "TYPE_INT8", "dims": [4]})
    with pytest.raises(ValueError, match="dims"):
        config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [5]})
    with pytest.raises(ValueError, match="missing 'dims'"):
        config.add_output({"name": "C", "data_type": "TYPE_FP32"})
    with pytest.raises(ValueError, match="max_batch_size 8"):
        config.set_max_batch_size(4)
    config.set_dynamic_batching()
    assert config.as_dict()["dynamic_batching"] == {}
    with pytest.raises(ValueError, match="decoupled"):
        config.set_model_transaction_policy({"decoupled": True})
        config.set_model_transaction_policy({"decoupled": False})


def test_requests_responses_and_senders():
    request = pb.InferenceRequest(model_name="m", requested_output_names=["O"], inputs=[pb.Tensor("I", np.ones(2))],
                                  parameters={"k": 1}, request_id="r")
    assert pb.get_input_tensor_by_name(request, "I").shape() == [2] and json.loads(request.parameters()) == {"k": 1}
    with pytest.raises(TypeError):
        pb.InferenceRequest("m", ["O"], [])  # keywords only, as Triton's BLS examples write them
    with pytest.raises(pb.TritonModelException, match="no response sender"):
        request.get_response_sender()
    error = pb.InferenceResponse(error=pb.TritonError("bad", pb.TritonError.NOT_FOUND))
    assert error.has_error() and error.error().code() == pb.TritonError.NOT_FOUND
    sent = []
    sender = pb.InferenceResponseSender(lambda response, flags: sent.append(flags), lambda: False)
    sender.send(pb.InferenceResponse([]))
    sender.send(flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    with pytest.raises(pb.TritonModelException, match="closed"):
        sender.send(pb.InferenceResponse([]))
    assert sent == [0, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL]


def test_metric_families_keep_kinds_apart():
    counter = pb.MetricFamily("test_pb_counter", "c", pb.MetricFamily.COUNTER).Metric(labels={"a": "1"})
    counter.increment(2)
    assert counter.value() == 2
    with pytest.raises(ValueError):
        counter.increment(-1)
    with pytest.raises(ValueError):
        counter.set(1)
    with pytest.raises(ValueError, match="different kind"):
        pb.MetricFamily("test_pb_counter", "c", pb.MetricFamily.GAUGE)
    with pytest.raises(ValueError, match="buckets"):
        pb.MetricFamily("test_pb_hist", "h", pb.MetricFamily.HISTOGRAM).Metric()

