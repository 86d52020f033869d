from mlserver import MLModel
from mlserver.codecs import DecodedParameterName
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

_to_exclude = {
    "parameters": {DecodedParameterName, "headers"},
    "inputs": {"__all__": {"parameters": {DecodedParameterName, "headers"}}},
}


class EchoRuntime(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = []
        for request_input in payload.inputs:
            decoded_input = self.decode(request_input)
            print(f"------ Encoded Input ({request_input.name}) ------")
            # the docs print json.dumps(request_input.dict(...)); .json() also prints gRPC's bytes
            print(request_input.json(exclude=_to_exclude, indent=2))
            print(f"------ Decoded input ({request_input.name}) ------")
            print(decoded_input)
            outputs.append(
                ResponseOutput(
                    name=request_input.name,
                    datatype=request_input.datatype,
                    shape=request_input.shape,
                    data=request_input.data,
                )
            )
        return InferenceResponse(model_name=self.name, outputs=outputs)
