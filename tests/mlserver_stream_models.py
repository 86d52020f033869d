"""MLServer runtimes with and without a `predict_stream` of their own, served by tests/test_mlserver_streaming.py
and by benchmarks/peers/mlserver_stream_conformance.py (the same runtimes asked of MLServer)."""

RUNTIME = """
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceResponse


class Plain(MLModel):
    async def predict(self, payload):
        text = StringCodec.decode_input(payload.inputs[0])[0]
        return InferenceResponse(model_name=self.name, outputs=[StringCodec.encode_output("out", [text.upper()])])


class Tokens(Plain):
    async def predict_stream(self, payloads):
        async for payload in payloads:  # every request of a gRPC stream; REST sends one
            text = StringCodec.decode_input(payload.inputs[0])[0]
            if text == "fail-first":
                raise ValueError("refused at once")
            for i, word in enumerate(text.split()):
                if word == "boom":
                    raise RuntimeError("boom mid-stream")
                yield InferenceResponse(model_name=self.name, id=payload.id, parameters={"index": i},
                                        outputs=[StringCodec.encode_output("out", [word])])
"""
