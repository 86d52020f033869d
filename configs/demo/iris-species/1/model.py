"""Triton Python-backend model, runnable unchanged on Triton and on gpuserve: every request queued by the
dynamic batcher is answered by one call to the iris-mlp model (BLS), then split back per request."""

import numpy as np
import triton_python_backend_utils as pb_utils

SPECIES = np.array([b"setosa", b"versicolor", b"virginica"], dtype=object)


class TritonPythonModel:
    def execute(self, requests):
        parts = [pb_utils.get_input_tensor_by_name(r, "measurements").as_numpy() for r in requests]
        call = pb_utils.InferenceRequest(model_name="iris-mlp", requested_output_names=["probabilities"],
                                         inputs=[pb_utils.Tensor("input", np.concatenate(parts))])
        answer = call.exec()
        if answer.has_error():
            return [pb_utils.InferenceResponse(error=answer.error()) for _ in requests]
        probabilities = pb_utils.get_output_tensor_by_name(answer, "probabilities").as_numpy()
        names = SPECIES[probabilities.argmax(axis=1)].reshape(-1, 1)
        bounds = np.cumsum([len(p) for p in parts])[:-1]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("species", chunk)]) for chunk in np.split(names, bounds)]
