"""MLServer's Kafka server (`kafka_enabled`): V2 inference requests consumed from `kafka_topic_input`, their
answers produced to `kafka_topic_output`, through aiokafka (extra `gpuserve[kafka]`).

As MLServer 1.7.1's: a message's value is an InferenceRequest in JSON, its `mlserver-model` header names the
model (`mlserver-version` the version), its key (when set) is the request's id, its headers reach the model as
the request's headers; the answer goes out keyed by the response's id, its value the InferenceResponse in JSON,
with the headers the model set on it. `mlserver-method` other than `infer` is refused. Where MLServer only logs a
request that fails (its consumer then waits for an answer that never comes), this server also produces an
answer for it: value `{"error": "..."}`, header `mlserver-error` with the HTTP status MLServer logs, under the
request's key, so nothing consumed is silently dropped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Optional, Tuple

import orjson

logger = logging.getLogger("gpuserve")
MODEL_HEADER = "mlserver-model"
VERSION_HEADER = "mlserver-version"
METHOD_HEADER = "mlserver-method"
ERROR_HEADER = "mlserver-error"
RETRY_S = 5.0


class KafkaServer:
    def __init__(self, plane: Any, servers: str, topic_input: str, topic_output: str):
        self.plane = plane
        self.servers = servers
        self.topic_input = topic_input
        self.topic_output = topic_output
        self.consumer = None
        self.producer = None
        self.tasks: set = set()
        self.stopping = False

    async def start(self) -> None:
        """Consume until stopped; without aiokafka, say so once and serve the other endpoints on."""
        try:
            from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
            from aiokafka.errors import ConsumerStoppedError
        except ImportError as exc:
            logger.error("kafka_enabled: the Kafka server needs aiokafka (pip install 'gpuserve[kafka]'): %s; "
                         "serving without it", exc)
            return
        said = False
        while not self.stopping:  # a broker not up yet (compose files start both at once) is tried again
            self.consumer = AIOKafkaConsumer(self.topic_input, bootstrap_servers=self.servers)
            self.producer = AIOKafkaProducer(bootstrap_servers=self.servers)
            try:
                await self.consumer.start()
                await self.producer.start()
                break
            except Exception as exc:
                if not said:
                    logger.error("Kafka server: cannot reach %s (%s); trying again every %g s, the other endpoints "
                                 "serve meanwhile", self.servers, exc, RETRY_S)
                    said = True
                await self._close_clients()
                await asyncio.sleep(RETRY_S)
        if self.stopping:
            return
        logger.info("Kafka server consuming messages from %s (topic %s)", self.servers, self.topic_input)
        try:
            async for record in self.consumer:
                task = asyncio.ensure_future(self.process(record))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        except ConsumerStoppedError:
            logger.info("Stopped consuming messages from topic %s", self.topic_input)

    async def stop(self) -> None:
        self.stopping = True
        if self.consumer is not None:  # no more messages taken
            await self.consumer.stop()
        if self.tasks:  # what was consumed is answered before the producer goes
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        await self._close_clients()

    async def _close_clients(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                try:
                    await client.stop()
                except Exception:  # a client that never started, or is stopped already
                    pass

    async def process(self, record: Any) -> None:
        key = _text(record.key)
        headers = {name: _text(value) or "" for name, value in (record.headers or ())}
        try:
            value, out_key, out_headers = await self.infer(key, record.value, headers)
        except Exception as exc:
            from gpuserve.errors import status_of

            status = status_of(exc)[0]
            logger.error("Kafka message on %s (key %r) failed: %s %s", self.topic_input, key, status, exc)
            value, out_key, out_headers = {"error": str(exc)}, key, {ERROR_HEADER: str(status)}
        try:
            await self.producer.send_and_wait(self.topic_output, key=(out_key or "").encode(), value=orjson.dumps(
                value), headers=[(name, text.encode()) for name, text in out_headers.items()])
        except Exception:
            logger.exception("Kafka answer to %s (key %r) could not be produced", self.topic_output, key)

    async def infer(self, key: Optional[str], raw: bytes, headers: Dict[str, str]
                    ) -> Tuple[Dict[str, Any], Optional[str], Dict[str, str]]:
        from gpuserve.errors import InvalidInput
        from gpuserve.mlserver.types import InferenceRequest, from_native_response, to_native_request

        method = headers.get(METHOD_HEADER, "infer")
        if method != "infer":
            raise InvalidInput(f"Invalid request method: {method}")
        if MODEL_HEADER not in headers:
            raise InvalidInput(f"Invalid Kafka message. Expected '{MODEL_HEADER}' header not found in message.")
        try:
            request = InferenceRequest.model_validate(orjson.loads(raw))
        except ValueError as exc:
            raise InvalidInput(f"the Kafka message is not an inference request: {exc}") from None
        if key:
            request.id = key  # the message's key wins over the body's id, as in MLServer
        native = to_native_request(request, headers[MODEL_HEADER], headers.get(VERSION_HEADER) or None)
        response, response_headers = await self.plane.infer(native, headers)
        answer = from_native_response(response)
        out_headers = _headers_of(answer, response_headers)
        return answer.model_dump(), answer.id, out_headers


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def _headers_of(answer: Any, response_headers: Optional[Dict[str, str]]) -> Dict[str, str]:
    """The headers a model set on its answer (MLServer's `parameters.headers`, taken off it), then the server's."""
    from gpuserve.mlserver.utils import extract_headers

    out = {str(k): str(v) for k, v in (extract_headers(answer) or {}).items()}
    out.update({str(k): str(v) for k, v in (response_headers or {}).items()})
    return out


__all__: List[str] = ["KafkaServer"]
