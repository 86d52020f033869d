import json
from typing import Optional

import numpy as np

from mlserver import MLModel
from mlserver.codecs import decode_args
from mlserver.utils import get_model_uri


class LinearModel(MLModel):
    """The docs' numpyro example, minus numpyro: posterior means read from `parameters.uri`."""

    async def load(self) -> bool:
        with open(self.settings.parameters.uri) as model_file:
            self._samples = json.load(model_file)
        assert await get_model_uri(self.settings) == self.settings.parameters.uri
        return True

    @decode_args
    async def predict(self, marriage: Optional[np.ndarray] = None, age: Optional[np.ndarray] = None) -> np.ndarray:
        mu = np.full((1,), self._samples["a"])
        if marriage is not None:
            mu = mu + self._samples["bM"] * marriage
        if age is not None:
            mu = mu + self._samples["bA"] * age
        return np.asarray(mu)
