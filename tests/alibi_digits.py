"""The digits image explainer's pieces shared by tests/test_mlserver_alibi_explain.py and
benchmarks/peers/alibi_explain_conformance.py, so both ask the two servers about the same model."""

# AnchorImage's superpixels (skimage's slic) for 8x8 digits: few, so an anchor is found quickly
SEGMENTATION = {"n_segments": 6, "compactness": 10, "sigma": 0.5, "start_label": 0}

# A custom MLServer runtime in the model's folder: sklearn on images (flattened), answering probabilities
DIGITS_RUNTIME = """
import joblib
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.types import InferenceResponse
from mlserver.utils import get_model_uri


class Digits(MLModel):
    async def load(self):
        self._model = joblib.load(await get_model_uri(self.settings))
        return True

    async def predict(self, payload):
        images = np.asarray(self.decode_request(payload, default_codec=NumpyRequestCodec))
        proba = self._model.predict_proba(images.reshape(len(images), -1))
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("proba", proba)])
"""
