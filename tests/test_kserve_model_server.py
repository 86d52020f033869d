"""KServe's `ModelServer` as a script uses it: the shared `parser` with KServe's flags and defaults,
the constructor's arguments as plain attributes, `predictor_config` (argument or `--predictor_*`
flags) reaching a transformer's default `predict`, `start_engine()` for ready models, and
`NoModelReady` when nothing is ready."""

import asyncio
import contextlib
import sys
import threading

import pytest

from conftest import running_server
from gpuserve import Model, PredictorConfig
from gpuserve import context
from gpuserve.settings import ServerSettings


@pytest.fixture(autouse=True)
def no_process_predictor(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["serve.py"])  # not pytest's flags
    yield
    context.set_predictor_config(None)


class Doubler(Model):
    def load(self):
        self.ready = True

    def predict(self, payload, headers=None):
        return {"predictions": [2 * x for x in payload["instances"]]}


class Transformer(Model):
    """Only preprocess: the default predict forwards to the predictor."""

    def preprocess(self, payload, headers=None):
        return {"instances": [x + 1 for x in payload["instances"]]}


@contextlib.contextmanager
def serving(server, models):
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(models)), daemon=True)
    thread.start()
    assert server.started.wait(60)
    try:
        yield server
    finally:
        server.stop()
        thread.join(60)


def local_settings():
    return ServerSettings.load(None, host="127.0.0.1", http_port=0, grpc_port=0, metrics_port=0,
                               enable_metrics_server=False)


def test_parser_has_kserves_flags_and_defaults():
    from gpuserve.model_server import parser

    args = parser.parse_args([])
    expected = dict(http_port=8080, grpc_port=8081, workers=1, max_threads=4, max_asyncio_workers=None,
                    enable_grpc=True, enable_docs_url=False, enable_latency_logging=True, configure_logging=True,
                    log_config_file=None, access_log_format=None, model_name="model", predictor_host=None,
                    protocol="v1", predictor_protocol="v1", predictor_use_ssl=False,
                    predictor_request_timeout_seconds=600, predictor_request_retries=0,
                    enable_predictor_health_check=False, grpc_max_send_message_length=8388608,
                    grpc_max_receive_message_length=8388608)
    assert {k: getattr(args, k) for k in expected} == expected
    args = parser.parse_args(["--predictor_use_ssl", "On", "--enable_grpc", "n", "--enable_predictor_health_check",
                              "--predictor_protocol", "grpc-v2"])
    assert args.predictor_use_ssl is True and args.enable_grpc is False and args.enable_predictor_health_check
    with pytest.raises(SystemExit):
        parser.parse_args(["--enable_grpc", "maybe"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--predictor_protocol", "v3"])


def test_model_server_arguments_are_attributes():
    from gpuserve import ModelServer

    server = ModelServer(http_port=19301, grpc_port=19302, grace_period=7, enable_grpc=False)
    assert (server.http_port, server.grpc_port, server.grace_period, server.enable_grpc) == (19301, 19302, 7, False)
    assert (server.workers, server.max_threads, server.max_asyncio_workers) == (1, 4, None)
    assert server.enable_latency_logging is True
    server.http_port = 19303
    server._apply_attributes()
    assert server.settings.http_port == 19303


def test_predictor_flags_reach_a_transformer(monkeypatch):
    from gpuserve import ModelServer

    monkeypatch.setattr(sys, "argv", ["serve.py", "--predictor_host", "pred:80", "--predictor_protocol", "v2",
                                      "--predictor_request_timeout_seconds", "9", "--http_port", "19304"])
    server = ModelServer()
    transformer = Transformer("t")
    server.register_model(transformer)
    assert server.http_port == 19304
    assert (transformer.predictor_host, transformer.protocol, transformer.timeout) == ("pred:80", "v2", 9)


def test_model_server_predictor_config_forwards(http):
    from gpuserve import ModelServer

    with running_server([Doubler("model")]) as predictor:
        config = PredictorConfig(f"127.0.0.1:{predictor.ports['http']}", predictor_request_timeout_seconds=10)
        transformer = Transformer("model")
        transformer.ready = True
        with serving(ModelServer(settings=local_settings(), predictor_config=config), [transformer]) as front:
            reply = http(front).post("/v1/models/model:predict", json={"instances": [1, 2]})
            assert reply.status_code == 200 and reply.json() == {"predictions": [4, 6]}


def test_start_engine_runs_for_a_model_passed_ready(http):
    class EngineModel(Model):
        def __init__(self, name):
            super().__init__(name)
            self.engine, self.ready, self.engine_started = True, True, threading.Event()

        async def start_engine(self):
            self.engine_started.set()

        def predict(self, payload, headers=None):
            return {"predictions": [self.engine_started.is_set()]}

    model = EngineModel("engine")
    with running_server([model]) as server:
        assert model.engine_started.wait(10)
        assert http(server).post("/v1/models/engine:predict", json={"instances": [1]}).json() == {"predictions": [True]}


def test_start_raises_no_model_ready_when_none_loads():
    from gpuserve import ModelServer
    from gpuserve.errors import NoModelReady

    class Broken(Model):
        def load(self):
            raise RuntimeError("no weights")

    server = ModelServer(settings=local_settings())
    server._configure_logging = False  # leave pytest's log capture alone
    with pytest.raises(NoModelReady) as caught:
        server.start([Broken("broken-a"), Broken("broken-b")])
    assert isinstance(caught.value, RuntimeError) and "broken-a" in str(caught.value) and "broken-b" in str(caught.value)
    assert not server.started.is_set()


def test_kserve_error_ancestry_and_signatures():
    from gpuserve import errors

    assert issubclass(errors.InvalidInput, ValueError)
    for name in ("InferenceError", "ModelNotReady", "ServerNotReady", "ServerNotLive", "NoModelReady"):
        assert issubclass(getattr(errors, name), RuntimeError), name
    failure = errors.InferenceError("boom", status="503", debug_details="trace")
    assert (str(failure), failure.reason, failure.status, failure.debug_details) == ("[503] boom", "boom", "503", "trace")
    assert errors.status_of(failure) == (500, "INTERNAL")
    assert errors.status_of(errors.ModelMissingError("/models/x")) == (500, "INTERNAL")
    assert str(errors.ModelMissingError("/models/x")) == "/models/x"
    assert str(errors.WorkersShouldBeLessThanMaxWorkersError(4)) == "Workers cannot be greater than 4"
    assert str(errors.ServerNotReady()) == "Server is not ready."
    assert errors.status_of(errors.InvalidInput("bad")) == (400, "INVALID_ARGUMENT")
