"""MLServer's `model_repository_implementation`: a class of the user's, subclassing `mlserver.repository.
ModelRepository`, answers which models exist (`list()`, read at start-up and by the repository index) and each
one's settings (`find(name)`, read by a load); the folder's own model-settings.json files are not read. Started
as users start it: `gpuserve start FOLDER` with MLServer's settings.json."""

import json
import textwrap

import httpx
import pytest
from test_cli import GPUSERVE, run, start, stop, wait_ready

from conftest import free_ports

REPOSITORY = textwrap.dedent('''
    from mlserver.errors import ModelNotFound
    from mlserver.repository import ModelRepository
    from mlserver.settings import ModelParameters, ModelSettings


    class Catalog(ModelRepository):
        def __init__(self, root, names, finds_file=None):
            self.root, self.names, self.finds_file = root, names, finds_file

        async def list(self):
            return [ModelSettings(name=name, implementation="scaler.Scaler",
                                  parameters=ModelParameters(extra={"factor": index + 2}))
                    for index, name in enumerate(self.names)]

        async def find(self, name):
            with open(self.finds_file, "a") as out:
                out.write(name + "\\n")
            found = [settings for settings in await self.list() if settings.name == name]
            if not found:
                raise ModelNotFound(name)
            return found
''')
SCALER = textwrap.dedent('''
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceResponse


    class Scaler(MLModel):
        async def load(self):
            self.factor = self.settings.parameters.extra["factor"]
            return True

        async def predict(self, payload):
            x = NumpyCodec.decode_input(payload.inputs[0])
            return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", x * self.factor)])
''')
BODY = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}


def _folder(tmp_path, implementation="catalog_repo.Catalog", args=None):
    (tmp_path / "catalog_repo.py").write_text(REPOSITORY)
    (tmp_path / "scaler.py").write_text(SCALER)
    (tmp_path / "gamma").mkdir()  # a model-settings.json model the custom repository does not name
    (tmp_path / "gamma" / "model-settings.json").write_text(json.dumps({"name": "gamma",
                                                                          "implementation": "scaler.Scaler"}))
    args = {"names": ["alpha", "beta"], "finds_file": str(tmp_path / "finds.txt")} if args is None else args
    logging_file = tmp_path / "logging.json"  # MLServer's logging_settings: a dictConfig file, applied last
    logging_file.write_text(json.dumps({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(tmp_path / "server.log")}},
        "loggers": {"gpuserve": {"handlers": ["file"], "level": "INFO"}}}))
    (tmp_path / "settings.json").write_text(json.dumps({"model_repository_implementation": implementation,
                                                         "model_repository_implementation_args": args,
                                                         "server_version": "1.7.1-custom", "extensions": ["x"],
                                                         "logging_settings": str(logging_file)}))
    return tmp_path


def test_models_come_from_the_custom_repository(tmp_path):
    folder = _folder(tmp_path)
    http, grpc, metrics = free_ports(3)
    proc = start([*GPUSERVE, "start", str(folder), "--http-port", str(http), "--grpc-port", str(grpc),
                  "--metrics-port", str(metrics), "--host", "127.0.0.1"])
    try:
        wait_ready(http, proc)
        base = f"http://127.0.0.1:{http}"
        for name, factor in (("alpha", 2), ("beta", 3)):
            answer = httpx.post(f"{base}/v2/models/{name}/infer", json=BODY)
            assert answer.status_code == 200, answer.text
            assert answer.json()["outputs"][0]["data"] == [1 * factor, 2 * factor]
        assert httpx.post(f"{base}/v2/models/gamma/infer", json=BODY).status_code == 404  # the folder is not read
        index = httpx.post(f"{base}/v2/repository/index", json={}).json()
        assert sorted((m["name"], m["state"]) for m in index) == [("alpha", "READY"), ("beta", "READY")]
        assert httpx.post(f"{base}/v2/repository/models/alpha/unload").status_code == 200
        assert httpx.post(f"{base}/v2/models/alpha/infer", json=BODY).status_code in (400, 404)
        assert httpx.post(f"{base}/v2/repository/models/alpha/load").status_code == 200  # find('alpha')
        assert httpx.post(f"{base}/v2/models/alpha/infer", json=BODY).json()["outputs"][0]["data"] == [2, 4]
        missing = httpx.post(f"{base}/v2/repository/models/nope/load")
        assert missing.status_code == 404 and "nope" in missing.json()["error"]
        assert (tmp_path / "finds.txt").read_text().split() == ["alpha", "nope"]
        assert httpx.post(f"{base}/v2/models/beta/infer", json=BODY).status_code == 200  # the others serve on
        metadata = httpx.get(f"{base}/v2").json()  # MLServer's server_version and extensions
        assert (metadata["version"], metadata["extensions"]) == ("1.7.1-custom", ["x"])
    finally:
        assert stop(proc) == 0
    assert "alpha" in (tmp_path / "server.log").read_text()  # the server's lines reached the configured handler


@pytest.mark.parametrize("implementation, args, words", [
    ("no_such_module.Repo", None, "cannot import 'no_such_module'"),
    ("catalog_repo.Catalog", {"unknown": 1}, "cannot be built"),
])
def test_a_repository_that_cannot_be_built_stops_the_start_clearly(tmp_path, implementation, args, words):
    folder = _folder(tmp_path, implementation, args)
    out = run([*GPUSERVE, "start", str(folder), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"])
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_logging_settings_that_cannot_apply_are_said_and_serving_goes_on(tmp_path, caplog):
    import logging

    from gpuserve.logging_setup import applied_logging_settings

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}))
    with caplog.at_level(logging.WARNING, logger="gpuserve"):
        applied_logging_settings(str(tmp_path / "missing.ini"))
        applied_logging_settings(str(broken))
    words = [r.getMessage() for r in caplog.records]
    assert any("Unable to parse logging_settings" in w and "missing.ini" in w for w in words)
    assert any("cannot be applied" in w and "broken.json" in w for w in words)


def test_the_default_implementation_lists_model_settings_files(tmp_path):
    import asyncio

    from gpuserve.mlserver.errors import ModelNotFound
    from gpuserve.mlserver.repository import ModelRepositoryFactory
    from gpuserve.mlserver.settings import Settings

    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / "deep" / "model-settings.json").write_text(json.dumps({"implementation": "x.Y"}))
    repository = ModelRepositoryFactory.resolve_model_repository(Settings(model_repository_root=str(tmp_path)))
    found = asyncio.run(repository.list())
    assert [(s.name, s.parameters.uri) for s in found] == [("deep", str(tmp_path / "a" / "deep"))]
    assert asyncio.run(repository.find("deep"))[0].implementation == "x.Y"
    with pytest.raises(ModelNotFound):
        asyncio.run(repository.find("other"))
