"""Outlier detectors through MLServer's Alibi-Detect runtime and gpuserve's, in process (not a server): saving
one needs TensorFlow (alibi-detect's legacy format), absent here, so each runtime loads a saved KSDrift and is
handed a fitted IForest / Mahalanobis in its place; the answers (outputs, parameters, headers) are printed as
JSON, to compare between

    .peers/mlserver-ad/bin/python benchmarks/peers/alibi_detect_outliers.py /tmp/od-mlserver > ml.json
    .venv/bin/python benchmarks/peers/alibi_detect_outliers.py /tmp/od-gpuserve gpuserve > gs.json

(setup: benchmarks/peers/alibi_detect_conformance.py). Last run 2026-12-07: both answers the same, field by
field: instance_score FP64 [1, N], feature_score a BYTES null [1, 1], is_outlier INT64 [1, N], meta with
x-seldon-alibi-type "outlier" and -method "isolationforest" / "mahalanobis".
"""

import asyncio
import json
import sys

import numpy as np
from alibi_detect.cd import KSDrift
from alibi_detect.od import IForest, Mahalanobis
from alibi_detect.saving import save_detector

if sys.argv[2:] == ["gpuserve"]:
    from gpuserve.mlserver.alias import install

    install()
    from gpuserve.mlserver.codecs import NumpyRequestCodec
    from gpuserve.mlserver.settings import ModelParameters, ModelSettings
else:
    from mlserver.codecs import NumpyRequestCodec
    from mlserver.settings import ModelParameters, ModelSettings
from mlserver_alibi_detect import AlibiDetectRuntime


async def main(folder: str) -> None:
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    save_detector(KSDrift(x), folder)
    answers = {}
    for kind in ("iforest", "mahalanobis"):
        detector = IForest(threshold=0.0) if kind == "iforest" else Mahalanobis(threshold=1.0)
        if kind == "iforest":
            np.random.seed(0)  # IForest's IsolationForest draws from NumPy's global generator
            detector.fit(x)
        extra = {"predict_parameters": {"return_instance_score": True}}
        runtime = AlibiDetectRuntime(ModelSettings(name=kind, implementation=AlibiDetectRuntime,
                                                   parameters=ModelParameters(uri=folder, extra=extra)))
        await runtime.load()
        runtime._model, runtime._online = detector, False
        answer = (await runtime.predict(NumpyRequestCodec.encode_request(x[:4] * 3))).model_dump(exclude_none=True)
        answer.pop("id", None)
        answers[kind] = answer
    print(json.dumps(answers, default=str, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
