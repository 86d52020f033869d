"""Classic runtimes run quick predictions on the event loop and slow ones on the executor."""

import asyncio
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
    model, row = _model(tmp_path, runtimes_classic.INLINE_ALONE_BELOW_S * 1.5)
    for _ in range(3):
        await model.predict(InferRequest.from_numpy("skl", {"input": row}))
    assert threading.get_ident() not in model.model.threads


async def test_a_lone_clients_longer_calls_run_on_the_loop_a_crowds_do_not(tmp_path):
    model, row = _model(tmp_path, INLINE_BELOW_S * 3)
    loop_thread = threading.get_ident()
    for _ in range(4):  # one client: each call waits for the one before
        await model.predict(InferRequest.from_numpy("skl", {"input": row}))
    assert model.model.threads[1:] == [loop_thread] * 3  # the first is timed on the thread
    model.model.threads.clear()
    for _ in range(5):  # eight clients whose requests arrive together
        await asyncio.gather(*(model.predict(InferRequest.from_numpy("skl", {"input": row})) for _ in range(8)))
    on_loop = model.model.threads.count(loop_thread)
    assert on_loop <= 2, on_loop  # the first burst's first call at most; then the load keeps them off


class ColdThread(Recorder):
    """Costs more CPU off the loop's thread, as a cold core makes the same call cost (XGBoost, 16 rows:
    240 us on the loop, 355 us on the model's thread)."""

    def __init__(self, estimator, loop_thread, on_loop, elsewhere):
        super().__init__(estimator)
        self.loop_thread, self.on_loop, self.elsewhere = loop_thread, on_loop, elsewhere

    def predict(self, x):
        self.seconds = self.on_loop if threading.get_ident() == self.loop_thread else self.elsewhere
        return super().predict(x)


async def test_a_call_that_looks_slow_only_on_its_thread_comes_back_to_the_loop(tmp_path):
    model, row = _model(tmp_path, 0.0)
    loop_thread = threading.get_ident()
    model.model = ColdThread(model.model, loop_thread, INLINE_BELOW_S * 0.5, INLINE_BELOW_S * 1.5)
    for _ in range(runtimes_classic.PROBE_EVERY + 6):
        await model.predict(InferRequest.from_numpy("skl", {"input": row}))
    threads = model.model.threads
    assert threads[0] != loop_thread  # timed on the thread first: 1.5x the limit there
    assert threads[-5:] == [loop_thread] * 5  # a probe on the loop measured 0.5x, and it stayed there


async def test_a_probe_never_takes_a_large_request_onto_the_loop(tmp_path):
    model, row = _model(tmp_path, 0.0)
    await model.predict(InferRequest.from_numpy("skl", {"input": row}))  # the thread exists, timed
    model._loop_per_row, model._probing = INLINE_BELOW_S / 2, runtimes_classic.PROBE_RUN  # mid-probe
    model.model.threads.clear()
    rows = np.repeat(row, 16, axis=0)  # 8x the limit by the loop's own estimate, over the lone-client one too
    await model.predict(InferRequest.from_numpy("skl", {"input": rows}))
    assert threading.get_ident() not in model.model.threads
