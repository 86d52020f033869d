"""Classic runtimes run quick predictions on the event loop and slow ones on the executor."""

import threading
import time

import joblib
import numpy as np
from sklearn.linear_model import LogisticRegression

from gpuserve import runtimes_classic
from gpuserve.runtimes_classic import INLINE_BELOW_S, SKLearnModel
from gpuserve.settings import ModelSettings
from gpuserve.types import InferRequest


class Recorder:
    """Stands in for the loaded estimator (scikit-learn's own predict takes ~115 us of checks per call
    here, over the limit): answers zeros, records the thread of each call, optionally burns CPU."""

    def __init__(self, estimator, seconds=0.0):
        self.estimator, self.seconds, self.threads = estimator, seconds, []

    def predict(self, x):
        self.threads.append(threading.get_ident())
        if self.seconds:  # CPU time, which is what the runtime measures
            end = time.thread_time() + self.seconds
            while time.thread_time() < end:
                pass
        return np.zeros(len(x))


def _model(tmp_path, seconds):
    x = np.random.default_rng(0).normal(size=(40, 3))
    joblib.dump(LogisticRegression().fit(x, x[:, 0] > 0), tmp_path / "model.joblib")
    model = SKLearnModel("skl", ModelSettings(name="skl", parameters={"uri": str(tmp_path / "model.joblib")}))
    model.load()
    model.model = Recorder(model.model, seconds)
    return model, x[:1]


async def test_quick_predictions_run_on_the_loop(tmp_path, monkeypatch):
    # a first call pays one-off costs (imports, caches); a 10 ms limit keeps that from deciding here
    monkeypatch.setattr(runtimes_classic, "INLINE_BELOW_S", 0.01)
    model, row = _model(tmp_path, 0.0)
    for _ in range(3):
        response = await model.predict(InferRequest.from_numpy("skl", {"input": row}))
        assert response.outputs[0].as_numpy().size == 1
    loop_thread = threading.get_ident()
    assert model.model.threads[0] != loop_thread  # the first is timed on the executor
    assert model.model.threads[1:] == [loop_thread, loop_thread]


async def test_slow_predictions_stay_off_the_loop(tmp_path):
    model, row = _model(tmp_path, INLINE_BELOW_S * 3)
    for _ in range(3):
        await model.predict(InferRequest.from_numpy("skl", {"input": row}))
    assert threading.get_ident() not in model.model.threads
