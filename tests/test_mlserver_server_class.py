"""`from mlserver import MLServer`: started from Python as MLServer users start it in their tests and entry
points (`await MLServer(settings).start(models_settings)`), it serves the models given, answers the repository
API from `model_repository_root` (whose models it does not load by itself, as MLServer's), and `stop()` ends
`start`."""

import asyncio
import json
import textwrap

import httpx

from conftest import free_ports

RUNTIME = textwrap.dedent('''
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceResponse


    class Scaler(MLModel):
        async def load(self):
            self.factor = self.settings.parameters.extra.get("factor", 2)
            return True

        async def predict(self, payload):
            x = NumpyCodec.decode_input(payload.inputs[0])
            return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", x * self.factor)])
''')
BODY = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}


def test_mlserver_class_serves_the_models_it_is_given(tmp_path, monkeypatch):
    (tmp_path / "scaler_runtime.py").write_text(RUNTIME)
    (tmp_path / "tripler").mkdir()  # in the repository, loadable through the repository API only
    (tmp_path / "tripler" / "model-settings.json").write_text(json.dumps(
        {"name": "tripler", "implementation": "scaler_runtime.Scaler", "parameters": {"extra": {"factor": 3}}}))
    monkeypatch.syspath_prepend(str(tmp_path))
    from gpuserve.mlserver import MLServer
    from gpuserve.mlserver.settings import ModelSettings, Settings

    http, grpc, metrics = free_ports(3)
    base = f"http://127.0.0.1:{http}"

    async def scenario():
        server = MLServer(Settings(host="127.0.0.1", http_port=http, grpc_port=grpc, metrics_port=metrics,
                                   model_repository_root=str(tmp_path)))
        started = asyncio.create_task(server.start([ModelSettings(name="doubler",
                                                                  implementation="scaler_runtime.Scaler")]))
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(200):
                try:
                    if (await client.get("/v2/models/doubler/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            answer = await client.post("/v2/models/doubler/infer", json=BODY)
            assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [2, 4]
            index = {m["name"]: m["state"] for m in (await client.post("/v2/repository/index", json={})).json()}
            assert index["doubler"] == "READY" and index["tripler"] != "READY"  # not loaded by start
            assert (await client.post("/v2/repository/models/tripler/load")).status_code == 200
            answer = await client.post("/v2/models/tripler/infer", json=BODY)
            assert answer.json()["outputs"][0]["data"] == [3, 6]
        await server.stop()
        await asyncio.wait_for(started, 30)  # start returns once stopped

    asyncio.run(scenario())


def test_only_the_settings_given_are_taken():
    from gpuserve.mlserver.settings import Settings, translated

    assert translated(Settings(http_port=1234, debug=True)) == {"http_port": 1234, "log_level": "DEBUG"}
    assert "parallel_workers" not in translated(Settings())  # MLServer's default 1 is not imposed
