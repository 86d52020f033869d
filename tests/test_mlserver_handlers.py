"""MLServer's `@custom_handler` routes (mlserver.handlers), answered as MLServer 1.7.1 answers them: the
method's parameters read from the request by annotation, its value written as JSON, errors as MLServer's
app writes them; served while the model is loaded, in process or from parallel workers."""

from __future__ import annotations

import gzip
import json
import textwrap

import httpx
import pytest

from conftest import running_server
from gpuserve import ModelRepository
from gpuserve.repository import DiskRepository

RUNTIME = """
from typing import Optional

from fastapi import Header, HTTPException, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class Item(BaseModel):
    a: int
    b: Optional[str] = None


class Custom(MLModel):
    async def load(self):
        self.calls = 0
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(model_name=self.name, outputs=[
            ResponseOutput(name="o", shape=[1], datatype="INT64", data=[1])])

    @custom_handler(rest_path="/my-request")
    async def with_request(self, request: Request) -> dict:
        return {"got": await request.json(), "path": request.url.path}

    @custom_handler(rest_path="/my-dict")
    async def with_dict(self, payload: dict) -> dict:
        return {"got": payload, "raw": b"bytes"}

    @custom_handler(rest_path="/my-item")
    async def with_item(self, item: Item):
        return item

    @custom_handler(rest_path="/my-get", rest_method="GET")
    async def counter(self, x: int = 3):
        self.calls += 1
        return {"x": x, "calls": self.calls, "name": self.name}

    @custom_handler(rest_path="/my-text")
    def text(self, request: Request):
        return PlainTextResponse("plain")

    @custom_handler(rest_path="/my-infer")
    async def infer(self, payload: InferenceRequest) -> InferenceResponse:
        return await self.predict(payload)

    @custom_handler(rest_path="/my-teapot")
    async def teapot(self):
        raise MLServerError("short and stout", status_code=418)

    @custom_handler(rest_path="/my-http-error")
    async def http_error(self):
        raise HTTPException(status_code=409, detail="taken")

    @custom_handler(rest_path="/my-header")
    async def header(self, content_type: Optional[str] = Header(default=None)):
        return {"content_type": content_type}

    @custom_handler(rest_path="/v2/models/{model_name}/custom")
    async def templated(self, model_name: str):
        return {"model_name": model_name}

    @custom_handler(rest_path="/v2/health/live")
    async def beside_builtin(self):
        return {"custom": True}
"""


def _folder(root, name="custom", **settings):
    folder = root / name
    folder.mkdir()
    (folder / "model-settings.json").write_text(json.dumps({"name": name, "implementation": "runtime.Custom",
                                                            **settings}))
    (folder / "runtime.py").write_text(textwrap.dedent(RUNTIME))
    return root


def _serve(root, **settings):
    return running_server(repository=DiskRepository(root).populate(ModelRepository()), **settings)


def test_decorator_marks_and_lists_methods():
    from gpuserve.mlserver.handlers import CustomHandler, custom_handler, get_custom_handlers

    class Runtime:
        @custom_handler(rest_path="/a")
        async def a(self):
            return 1

        @custom_handler(rest_path="/b", rest_method="GET")
        def b(self):
            return 2

        @property
        def broken(self):
            raise AssertionError("properties are not evaluated to find handlers")

    found = {mark.rest_path: (mark, method) for mark, method in get_custom_handlers(Runtime())}
    assert set(found) == {"/a", "/b"}
    assert found["/a"][0] == CustomHandler(rest_path="/a", rest_method="POST")
    assert found["/b"][0].rest_method == "GET" and found["/b"][1]() == 2


@pytest.fixture(scope="module", params=["gpuserve", "uvicorn"])
def http(request, tmp_path_factory):
    root = _folder(tmp_path_factory.mktemp("handlers"))
    with _serve(root, http_server=request.param) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=30) as client:
            yield client


def test_bodies_are_read_by_annotation(http):
    answer = http.post("/my-request", json={"a": 1})
    assert answer.status_code == 200 and answer.json() == {"got": {"a": 1}, "path": "/my-request"}
    assert http.post("/my-dict", json={"a": 1}).json() == {"got": {"a": 1}, "raw": "bytes"}
    assert http.post("/my-item", json={"a": 1}).json() == {"a": 1, "b": None}
    assert http.post("/my-header", content=b"x", headers={"content-type": "text/csv"}).json() == {
        "content_type": "text/csv"}
    # JSON without a Content-Type still parses (MLServer's FastAPI); gzip bodies are inflated first.
    assert http.post("/my-dict", content=b'{"n": 2}').json()["got"] == {"n": 2}
    zipped = http.post("/my-dict", content=gzip.compress(b'{"z": 3}'),
                       headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert zipped.json()["got"] == {"z": 3}


def test_query_path_and_response_forms(http):
    assert http.get("/my-get", params={"x": 7}).json() == {"x": 7, "calls": 1, "name": "custom"}
    assert http.post("/v2/models/abc/custom").json() == {"model_name": "abc"}
    text = http.post("/my-text")
    assert text.text == "plain" and text.headers["content-type"].startswith("text/plain")
    infer = http.post("/my-infer", json={"inputs": [{"name": "i", "shape": [1], "datatype": "INT64", "data": [1]}]})
    assert infer.json() == {"model_name": "custom", "model_version": None, "id": None, "parameters": None,
                            "outputs": [{"name": "o", "shape": [1], "datatype": "INT64", "parameters": None,
                                         "data": [1]}]}


def test_errors_as_mlserver_answers_them(http):
    teapot = http.post("/my-teapot")
    assert (teapot.status_code, teapot.json()) == (418, {"error": "short and stout"})
    taken = http.post("/my-http-error")
    assert (taken.status_code, taken.json()) == (409, {"detail": "taken"})
    invalid = http.post("/my-item", json={"a": "x"})
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["body", "a"]
    wrong = http.post("/my-get")
    assert (wrong.status_code, wrong.json(), wrong.headers["allow"]) == (405, {"detail": "Method Not Allowed"}, "GET")


def test_builtin_routes_come_first(http):
    assert http.get("/v2/health/live").status_code == 200  # the server's own GET
    assert http.post("/v2/health/live").json() == {"custom": True}  # a method the server does not serve there
    assert http.get("/v2/models/custom/ready").status_code == 200
    assert http.post("/v2/models/custom/infer", json={
        "inputs": [{"name": "i", "shape": [1], "datatype": "INT64", "data": [1]}]}).json()["outputs"][0]["data"] == [1]


def test_routes_follow_load_and_unload(tmp_path):
    with _serve(_folder(tmp_path)) as server, \
            httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=30) as http:
        assert http.get("/my-get").json()["calls"] == 1
        assert http.post("/v2/repository/models/custom/unload").status_code == 200
        assert http.get("/my-get").status_code == 404
        assert http.post("/v2/health/live").status_code == 405
        assert http.post("/v2/repository/models/custom/load").status_code == 200
        assert http.get("/my-get").json()["calls"] == 1  # the new instance's method
        assert http.get("/my-get").json()["calls"] == 2


def test_parallel_workers_answer_the_routes(tmp_path):
    with _serve(_folder(tmp_path, parallel_workers=1)) as server, \
            httpx.Client(base_url=f"http://127.0.0.1:{server.ports['http']}", timeout=60) as http:
        assert http.post("/my-request", json={"a": 1}).json() == {"got": {"a": 1}, "path": "/my-request"}
        zipped = http.post("/my-dict", content=gzip.compress(b'{"z": 3}'),
                           headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert zipped.json() == {"got": {"z": 3}, "raw": "bytes"}
        assert [http.get("/my-get", params={"x": 5}).json()["calls"] for _ in range(2)] == [1, 2]
        assert http.post("/my-teapot").status_code == 418
        text = http.post("/my-text")
        assert text.text == "plain" and text.headers["content-type"].startswith("text/plain")
        assert http.post("/my-item", json={"a": "x"}).status_code == 422
