"""Trace and log settings (Triton's extensions) through tritonclient.http and tritonclient.grpc:
round trips, per-model trace settings over the global ones, clearing, validation, the file
locations kept off the network, one state for both transports, and the logger level following."""

from __future__ import annotations

import json
import logging

import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from conftest import running_server
from gpuserve import InferOutput, InferResponse, Model
from gpuserve.errors import InvalidInput, Unimplemented
from gpuserve.runtime_settings import TRACE_DEFAULTS, RuntimeSettings


class Echo(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        tensor = payload.inputs[0]
        return InferResponse(payload.id, self.name, [InferOutput("OUTPUT0", tensor.shape, tensor.datatype,
                                                                 tensor.as_numpy())])


@pytest.fixture(scope="module")
def server():
    with running_server([Echo("echo")]) as srv:
        yield srv


@pytest.fixture(params=["http", "grpc"])
def api(request, server):
    """(module, client); trace and log settings are put back to the defaults afterwards."""
    module = triton_http if request.param == "http" else triton_grpc
    client = module.InferenceServerClient(f"127.0.0.1:{server.ports[request.param]}")
    plane = server.dataplane
    log_before = plane.runtime_settings.log()
    try:
        yield module, client
    finally:
        client.update_trace_settings(settings={k: None for k in ("trace_level", "trace_rate", "trace_count",
                                                                 "log_frequency")})
        client.update_trace_settings("echo", settings={"trace_level": None, "trace_rate": None,
                                                       "trace_count": None, "log_frequency": None})
        plane.runtime_settings.update_log({k: v for k, v in log_before.items() if k != "log_file"})
        logging.getLogger("gpuserve").setLevel(logging.NOTSET)
        client.close()


def trace(module, client, model=None, settings=None):
    """Trace settings as {key: str | list} from either client, read or updated."""
    if settings is None:
        reply = client.get_trace_settings(model_name=model) if module is triton_http \
            else client.get_trace_settings(model_name=model, as_json=True)
    elif module is triton_http:
        reply = client.update_trace_settings(model_name=model, settings=settings)
    else:
        reply = client.update_trace_settings(model_name=model, settings=settings, as_json=True)
    if module is triton_http:
        return reply
    return {k: (v["value"] if k == "trace_level" else v["value"][0]) for k, v in reply["settings"].items()}


def log(module, client, settings=None):
    if module is triton_http:
        return client.get_log_settings() if settings is None else client.update_log_settings(settings)
    reply = client.get_log_settings(as_json=True) if settings is None \
        else client.update_log_settings(settings, as_json=True)
    return {k: next(iter(v.values())) for k, v in reply["settings"].items()}


def code_of(module, excinfo) -> str:
    status = excinfo.value.status()
    return str(status) if module is triton_http else str(status).replace("StatusCode.", "")


def test_trace_settings_round_trip(api):
    module, client = api
    assert trace(module, client) == TRACE_DEFAULTS
    updated = trace(module, client, settings={"trace_rate": "1", "trace_level": ["TIMESTAMPS"]})
    assert updated["trace_rate"] == "1" and updated["trace_level"] == ["TIMESTAMPS"]
    assert trace(module, client) == updated
    # a model's own settings lie over the global ones, which still show through where it has none
    model = trace(module, client, "echo", {"trace_level": ["TIMESTAMPS", "TENSORS"], "log_frequency": "50"})
    assert model["trace_level"] == ["TIMESTAMPS", "TENSORS"] and model["log_frequency"] == "50"
    assert model["trace_rate"] == "1"
    trace(module, client, settings={"trace_rate": "7"})
    assert trace(module, client, "echo")["trace_rate"] == "7"
    assert trace(module, client)["trace_level"] == ["TIMESTAMPS"]
    # clearing: the model falls back to the global value, the global one to its default
    assert trace(module, client, "echo", {"trace_level": None})["trace_level"] == ["TIMESTAMPS"]
    assert trace(module, client, settings={"trace_rate": None, "trace_level": None}) == {
        **TRACE_DEFAULTS, "trace_rate": "1000"}
    assert trace(module, client, settings={"trace_count": "-1"})["trace_count"] == "-1"


def test_trace_settings_are_checked(api):
    module, client = api
    invalid = "400" if module is triton_http else "INVALID_ARGUMENT"
    cases = [({"trace_rate": "fast"}, invalid, "trace_rate"), ({"trace_count": "-2"}, invalid, "trace_count"),
             ({"trace_level": ["OFF", "TENSORS"]}, invalid, "OFF"), ({"trace_level": ["LOUD"]}, invalid, "LOUD"),
             ({"trace_rate": ["1", "2"]}, invalid, "only 1 value"), ({"tracing": "yes"}, invalid, "tracing"),
             ({"trace_file": "/tmp/elsewhere.json"}, "501" if module is triton_http else "UNIMPLEMENTED",
              "can not be updated through network protocol")]
    for settings, code, words in cases:
        with pytest.raises(InferenceServerException) as excinfo:
            trace(module, client, settings=settings)
        assert code_of(module, excinfo) == code and words in excinfo.value.message(), settings
    with pytest.raises(InferenceServerException) as excinfo:
        trace(module, client, model="nope")
    assert code_of(module, excinfo) == invalid and "Request for unknown model : nope" in excinfo.value.message()
    assert trace(module, client) == TRACE_DEFAULTS  # nothing changed by the failed updates
    assert client.is_server_live()


def test_log_settings_round_trip_and_logger_level(api):
    module, client = api
    gpuserve_logger = logging.getLogger("gpuserve")
    current = log(module, client)
    assert set(current) == {"log_file", "log_info", "log_warning", "log_error", "log_verbose_level", "log_format"}
    assert current["log_file"] == "" and current["log_format"] == "default"
    updated = log(module, client, {"log_verbose_level": 1, "log_format": "ISO8601"})
    assert updated["log_verbose_level"] == 1 and updated["log_format"] == "ISO8601"
    assert gpuserve_logger.getEffectiveLevel() == logging.DEBUG
    assert log(module, client) == updated
    log(module, client, {"log_verbose_level": 0, "log_info": False, "log_warning": True})
    assert gpuserve_logger.getEffectiveLevel() == logging.WARNING
    log(module, client, {"log_warning": False})
    assert gpuserve_logger.getEffectiveLevel() == logging.ERROR
    final = log(module, client, {"log_error": False})
    assert gpuserve_logger.getEffectiveLevel() > logging.CRITICAL
    assert (final["log_info"], final["log_warning"], final["log_error"]) == (False, False, False)
    log(module, client, {"log_info": True, "log_warning": True, "log_error": True})
    assert gpuserve_logger.getEffectiveLevel() == logging.INFO


def test_log_settings_are_checked(api):
    module, client = api
    before = log(module, client)
    invalid = "400" if module is triton_http else "INVALID_ARGUMENT"
    cases = [({"log_format": "xml"}, invalid, "log_format"), ({"log_loud": True}, invalid, "log_loud"),
             ({"log_file": "/tmp/other.log"}, "501" if module is triton_http else "UNIMPLEMENTED",
              "can not be updated through network protocol")]
    if module is triton_http:  # the gRPC client types every value from its key, so these cannot be sent
        cases += [({"log_info": "yes"}, invalid, "boolean"), ({"log_verbose_level": -1}, invalid, "unsigned")]
    for settings, code, words in cases:
        with pytest.raises(InferenceServerException) as excinfo:
            log(module, client, settings)
        assert code_of(module, excinfo) == code and words in excinfo.value.message(), settings
    assert log(module, client) == before
    assert client.is_server_live()


def test_one_state_for_both_transports(server, http):
    rest = http(server)
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}") as rpc:
        try:
            assert rest.post("/v2/trace/setting", content=json.dumps({"trace_rate": "3"})).status_code == 200
            assert rpc.get_trace_settings(as_json=True)["settings"]["trace_rate"]["value"] == ["3"]
            rpc.update_trace_settings("echo", settings={"trace_count": "5"})
            assert rest.get("/v2/models/echo/trace/setting").json()["trace_count"] == "5"
            # REST: a model named with no settings drops that model's own settings (Triton's rule)
            assert rest.post("/v2/models/echo/trace/setting", content=b"{}").json()["trace_count"] == "-1"
            assert rest.post("/v2/logging", content=b"[]").status_code == 400
        finally:
            rpc.update_trace_settings(settings={"trace_rate": None})


def test_runtime_settings_on_their_own():
    settings = RuntimeSettings(lambda name: name == "known", logger_name="gpuserve.test_trace_log")
    try:
        assert settings.trace("known") == TRACE_DEFAULTS
        with pytest.raises(InvalidInput, match="unknown model"):
            settings.update_trace({"trace_rate": "2"}, "other")
        with pytest.raises(InvalidInput):  # checked before anything changes
            settings.update_trace({"trace_rate": "2", "trace_count": "x"})
        assert settings.trace()["trace_rate"] == "1000"
        assert settings.update_trace({"trace_rate": 5, "trace_level": "TENSORS"})["trace_level"] == ["TENSORS"]
        assert settings.trace()["trace_rate"] == "5"
        with pytest.raises(Unimplemented):
            settings.update_trace({"trace_mode": "opentelemetry"})
        with pytest.raises(InvalidInput):
            settings.update_log({"log_verbose_level": True})
        assert settings.update_log({"log_verbose_level": 2})["log_verbose_level"] == 2
        assert logging.getLogger("gpuserve.test_trace_log").level == logging.DEBUG
    finally:
        logging.getLogger("gpuserve.test_trace_log").setLevel(logging.NOTSET)
