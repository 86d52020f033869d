from typing import List

import numpy as np

from mlserver import MLModel
from mlserver.codecs import decode_args


class _Model:
    """Stands in for a question-answering model: scores each question by its context's overlap."""

    def predict(self, questions: List[str], context: List[str]) -> np.ndarray:
        return np.array([len(set(q.lower().split()) & set(c.lower().split())) for q, c in zip(questions, context)],
                        dtype=np.int64)


def load_my_custom_model() -> _Model:
    return _Model()


class MyCustomRuntime(MLModel):
    async def load(self) -> bool:
        self._model = load_my_custom_model()
        return True

    @decode_args
    async def predict(self, questions: List[str], context: List[str]) -> np.ndarray:
        return self._model.predict(questions, context)
