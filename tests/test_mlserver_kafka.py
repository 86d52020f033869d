"""MLServer's Kafka server (`kafka_enabled`), driven through a stand-in for aiokafka's consumer and producer (no
Kafka broker runs on these machines; the real aiokafka calls are the same): a message's value is a V2 request,
`mlserver-model` names the model, the key becomes the request's id, and the answer is produced keyed by the
response's id; a message that fails is answered with its error (MLServer only logs it), and without aiokafka
the server serves its other endpoints on."""

import json
import logging
import queue
import sys
import threading
import time
import types

import httpx
import numpy as np
import pytest

from conftest import running_server
from gpuserve import Model
from gpuserve.types import InferOutput, InferResponse



class Doubler(Model):
    def load(self):
        self.ready = True

    async def predict(self, payload, headers=None):
        return InferResponse(payload.id, self.name, [InferOutput.from_numpy("y", payload.inputs[0].as_numpy() * 2)])


class Record:
    def __init__(self, key, value, headers):
        self.key, self.value, self.headers = key, value, headers


@pytest.fixture
def broker(monkeypatch):
    """A stand-in aiokafka: messages put on `incoming` are consumed; what is produced lands in `produced`."""
    state = types.SimpleNamespace(incoming=queue.Queue(), produced=[], arrived=threading.Condition(), topics={},
                                  down=0)

    class ConsumerStoppedError(Exception):
        pass

    class AIOKafkaConsumer:
        def __init__(self, topic, bootstrap_servers):
            state.topics["input"], state.topics["servers"] = topic, bootstrap_servers
            self.stopped = False

        async def start(self):
            if state.down:
                state.down -= 1
                raise ConnectionError("broker not up yet")

        async def stop(self):  # this consumer only, as aiokafka's
            self.stopped = True

        def __aiter__(self):
            return self

        async def __anext__(self):
            import asyncio

            while not self.stopped:
                try:
                    return state.incoming.get_nowait()
                except queue.Empty:
                    await asyncio.sleep(0.005)
            raise ConsumerStoppedError()

    class AIOKafkaProducer:
        def __init__(self, bootstrap_servers):
            pass

        async def start(self):
            pass

        async def stop(self):
            pass

        async def send_and_wait(self, topic, key=None, value=None, headers=None):
            with state.arrived:
                state.produced.append((topic, key, json.loads(value), dict(headers or [])))
                state.arrived.notify_all()

    module = types.ModuleType("aiokafka")
    module.AIOKafkaConsumer, module.AIOKafkaProducer = AIOKafkaConsumer, AIOKafkaProducer
    errors = types.ModuleType("aiokafka.errors")
    errors.ConsumerStoppedError = ConsumerStoppedError
    module.errors = errors
    monkeypatch.setitem(sys.modules, "aiokafka", module)
    monkeypatch.setitem(sys.modules, "aiokafka.errors", errors)

    def answers(count, timeout=10.0):
        deadline = time.monotonic() + timeout
        with state.arrived:
            while len(state.produced) < count and time.monotonic() < deadline:
                state.arrived.wait(0.1)
        return list(state.produced)

    state.answers = answers
    return state


def _message(key, body, **headers):
    return Record(key.encode() if key else None, json.dumps(body).encode(),
                  [(name, value.encode()) for name, value in headers.items()])


BODY = {"id": "body-id", "inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}


def test_messages_are_answered_on_the_output_topic(broker):
    with running_server([Doubler("doubler")], kafka_enabled=True, kafka_servers="broker:9092",
                        kafka_topic_input="in", kafka_topic_output="out"):
        broker.incoming.put(_message("k1", BODY, **{"mlserver-model": "doubler"}))
        broker.incoming.put(_message(None, BODY, **{"mlserver-model": "doubler"}))
        broker.incoming.put(_message("k3", BODY))  # no model named
        broker.incoming.put(_message("k4", BODY, **{"mlserver-model": "nope"}))
        broker.incoming.put(Record(b"k5", b"not json", [("mlserver-model", b"doubler")]))
        produced = broker.answers(5)
    assert broker.topics == {"input": "in", "servers": "broker:9092"}
    by_key = {key: (topic, value, headers) for topic, key, value, headers in produced}
    assert len(produced) == 5 and {topic for topic, *_ in produced} == {"out"}
    topic, value, headers = by_key[b"k1"]
    assert value["id"] == "k1" and value["model_name"] == "doubler"  # the key wins over the body's id
    assert np.allclose(value["outputs"][0]["data"], [2, 4]) and "mlserver-error" not in headers
    assert by_key[b"body-id"][1]["id"] == "body-id"  # no key: the body's id, and the answer keyed by it
    assert by_key[b"k3"][2]["mlserver-error"] == b"400" and "mlserver-model" in by_key[b"k3"][1]["error"]
    assert by_key[b"k4"][2]["mlserver-error"] == b"404" and "nope" in by_key[b"k4"][1]["error"]
    assert by_key[b"k5"][2]["mlserver-error"] == b"400"


def test_a_broker_not_up_yet_is_tried_again(broker, monkeypatch, caplog):
    from gpuserve.mlserver import kafka

    monkeypatch.setattr(kafka, "RETRY_S", 0.05)
    broker.down = 3
    with caplog.at_level(logging.ERROR, logger="gpuserve"):
        with running_server([Doubler("doubler")], kafka_enabled=True):
            broker.incoming.put(_message("k1", BODY, **{"mlserver-model": "doubler"}))
            produced = broker.answers(1)
    assert len(produced) == 1 and produced[0][2]["id"] == "k1" and broker.down == 0
    assert len([r for r in caplog.records if "cannot reach" in r.getMessage()]) == 1  # said once


def test_without_aiokafka_the_other_endpoints_serve_on(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "aiokafka", None)
    with caplog.at_level(logging.ERROR, logger="gpuserve"):
        with running_server([Doubler("doubler")], kafka_enabled=True) as server:
            answer = httpx.post(f"http://127.0.0.1:{server.ports['http']}/v2/models/doubler/infer", json=BODY)
            assert answer.status_code == 200
    assert any("aiokafka" in r.getMessage() for r in caplog.records)
