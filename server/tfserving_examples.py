"""TensorFlow Serving's Classify, Regress and MultiInference on the served models: tf.Example inputs for a SavedModel's
classify and regress signatures (TF1 exports, Estimators'), as TFServing runs them, free of any transport (the gRPC
servicer passes its messages, the REST routes build the same messages from JSON, as TFServing's REST does).

An Input becomes what such a signature takes: a 1-D string tensor of serialized tf.Examples, each one's context
serialized before it, so that parsing merges the two and the example's own features win. The signature is the
request's `signature_name`, else `serving_default`; it must be a classify (resp. regress) one by its method_name
in saved_model.pb (as TFServing with --enable_signature_method_name_check; TFServing's default checks only the
shape of the signature, which a predict signature may happen to have), take `inputs` and give `classes` and/or
`scores` (resp. `outputs`). Errors carry TFServing's codes and words. Each request's examples run on their own,
outside the engine's batches. A model that is not a SavedModel has one predict signature, so it classifies
nothing and says why.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from gpuserve.dataplane import DataPlane
from gpuserve.datatypes import from_numpy_dtype
from gpuserve.errors import GpuserveError, InvalidInput, Unimplemented
from gpuserve.server import tfserving_api as api
from gpuserve.server.grpc import tfserving_pb2 as pb

INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"  # TFServing's kClassify*/kRegress*


def serialized_examples(given: pb.Input) -> np.ndarray:
    """The Input as a signature takes it; the context's bytes before each example's merge them on parsing."""
    kind = given.WhichOneof("kind")
    if kind == "example_list":
        rows = [example.SerializeToString() for example in given.example_list.examples]
    elif kind == "example_list_with_context":
        context = given.example_list_with_context.context.SerializeToString()
        rows = [context + example.SerializeToString() for example in given.example_list_with_context.examples]
    else:
        rows = []
    if not rows:
        raise InvalidInput("Input is empty.")
    array = np.empty(len(rows), dtype=object)
    array[:] = rows
    return array


def _describe(signature: dict) -> str:
    """A short SignatureDef for messages that carry TFServing's DebugString of it."""
    return (f"method_name: \"{signature['method_name']}\" inputs: {sorted(signature['inputs'])} "
            f"outputs: {sorted(signature['outputs'])}")


def classify_outputs(signature: dict) -> List[str]:
    """The outputs a classify signature gives, after TFServing's checks of it (PreProcessClassification)."""
    if signature["method_name"] != api.CLASSIFY_METHOD:
        raise InvalidInput(f"Expected classification signature method_name to be {api.CLASSIFY_METHOD}. "
                           f"Was: {signature['method_name']}")
    if len(signature["inputs"]) != 1:
        raise InvalidInput("Expected one input Tensor.")
    if len(signature["outputs"]) not in (1, 2):
        raise InvalidInput(f"Expected one or two output Tensors, found {len(signature['outputs'])}")
    if INPUTS not in signature["inputs"]:
        raise InvalidInput(f"No classification inputs found in SignatureDef: {_describe(signature)}")
    outputs = [name for name in (CLASSES, SCORES) if name in signature["outputs"]]
    if not outputs:
        raise InvalidInput(f'Expected classification signature outputs to contain at least one of "{CLASSES}" or '
                           f'"{SCORES}". Signature was: {_describe(signature)}')
    return outputs


def regress_outputs(signature: dict) -> List[str]:
    """TFServing's checks of a regress signature (PreProcessRegression)."""
    if signature["method_name"] != api.REGRESS_METHOD:
        raise InvalidInput(f"Expected regression signature method_name to be {api.REGRESS_METHOD}. "
                           f"Was: {signature['method_name']}")
    if len(signature["inputs"]) != 1:
        raise InvalidInput("Expected one input Tensor.")
    if len(signature["outputs"]) != 1:
        raise InvalidInput("Expected one output Tensor.")
    if INPUTS not in signature["inputs"]:
        raise InvalidInput(f"No regression inputs found in SignatureDef: {_describe(signature)}")
    if OUTPUTS not in signature["outputs"]:
        raise InvalidInput(f"No regression outputs found in SignatureDef: {_describe(signature)}")
    return [OUTPUTS]


def _dtype_name(array: np.ndarray) -> str:
    try:
        return api.TF_DTYPE_NAMES.get(from_numpy_dtype(array.dtype), "DT_INVALID")
    except GpuserveError:
        return "DT_INVALID"


def _shape(array: np.ndarray) -> str:
    return "[" + ",".join(str(size) for size in array.shape) + "]"


def fill_classifications(result: pb.ClassificationResult, outputs: Dict[str, np.ndarray], count: int) -> None:
    """(label, score) rows of the classify signature's outputs, checked as TFServing checks them
    (PostProcessClassificationResult): a missing side is an empty label or a zero score."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    for array, what, dtype in ((classes, "classes", "DT_STRING"), (scores, "scores", "DT_FLOAT")):
        if array is None:
            continue
        if array.ndim != 2:
            raise InvalidInput(f"Expected Tensor shape: [batch_size num_classes] but got {_shape(array)}")
        if _dtype_name(array) != dtype:
            raise InvalidInput(f"Expected {what} Tensor of {dtype}. Got: {_dtype_name(array)}")
        if array.shape[0] != count:
            raise InvalidInput(f"Expected {what} output batch size of {count}. Got: {array.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidInput(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                           f"{scores.shape[1]}")
    width = (classes if classes is not None else scores).shape[1]
    labels = classes.tolist() if classes is not None else None
    values = scores.tolist() if scores is not None else None
    for i in range(count):
        row = result.classifications.add()
        for c in range(width):
            entry = row.classes.add()
            if labels is not None:
                label = labels[i][c]
                entry.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if values is not None:
                entry.score = values[i][c]


def fill_regressions(result: pb.RegressionResult, outputs: Dict[str, np.ndarray], count: int) -> None:
    """One value per example, checked as TFServing checks them (PostProcessRegressionResult)."""
    array = outputs[OUTPUTS]
    if not (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
        raise InvalidInput(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                           f"{_shape(array)}")
    if array.shape[0] != count:
        raise InvalidInput(f"Input batch size did not match output batch size: {count} vs. {array.shape[0]}")
    if _dtype_name(array) != "DT_FLOAT":
        raise InvalidInput(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(array)}")
    for value in array.reshape(-1).tolist():
        result.regressions.add(value=value)


async def _run(model, signature: str, examples: np.ndarray, outputs: List[str]) -> Dict[str, np.ndarray]:
    """The signature on the examples, on their own, as TFServing runs them: batched with other requests' rows, one
    malformed example would fail every request of its batch (the parse is the graph's first op)."""
    answer = await model.tfserving_run(signature, {INPUTS: examples}, outputs)
    return {name: np.asarray(array) for name, array in answer.items()}


def _signature(plane: DataPlane, model, version: Optional[int], name: str) -> dict:
    found = api.signature_defs(plane, model, version).get(name)
    if found is None:
        raise InvalidInput(f"No signature was found with the name: {name}")
    return found


async def _answer(plane: DataPlane, request, check, fill, answer):
    """One Classify or Regress in TFServing's order: the servable, the signature's checks, the Input, the run."""
    if not request.HasField("model_spec"):
        raise InvalidInput("Missing ModelSpec")
    spec = request.model_spec
    model, version = api.servable(plane, spec.name, api.message_version(plane, spec))
    name = spec.signature_name or api.DEFAULT_SIGNATURE
    outputs = check(_signature(plane, model, version, name))
    examples = serialized_examples(request.input)
    fill(answer.result, await _run(model, name, examples, outputs), len(examples))
    api.answer_spec(answer.model_spec, spec.name, version, spec.signature_name)
    return answer


async def classify(plane: DataPlane, request: pb.ClassificationRequest) -> pb.ClassificationResponse:
    return await _answer(plane, request, classify_outputs, fill_classifications, pb.ClassificationResponse())


async def regress(plane: DataPlane, request: pb.RegressionRequest) -> pb.RegressionResponse:
    return await _answer(plane, request, regress_outputs, fill_regressions, pb.RegressionResponse())


async def multi_inference(plane: DataPlane, request: pb.MultiInferenceRequest) -> pb.MultiInferenceResponse:
    """Several classify and regress tasks over one Input, as TFServing's: one model (the first task's spec finds
    the servable), each signature named once."""
    first = request.tasks[0].model_spec if request.tasks else pb.ModelSpec()
    if not first.name:
        raise InvalidInput("ModelSpec has no name specified.")
    model, version = api.servable(plane, first.name, api.message_version(plane, first))
    defs = api.signature_defs(plane, model, version)
    plan = []  # (task, signature name, its outputs)
    for task in request.tasks:
        if not task.model_spec.name:
            raise InvalidInput("Found ModelSpec with an empty model name.")
        if task.model_spec.name != first.name:
            raise InvalidInput("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        name = task.model_spec.signature_name or api.DEFAULT_SIGNATURE
        if any(name == seen for _, seen, _ in plan):
            raise InvalidInput(f"Duplicate evaluation of signature: {name}")
        if name not in defs:
            raise InvalidInput(f"Requested signature not found in model graph: {name}")
        if task.method_name == api.CLASSIFY_METHOD:
            plan.append((task, name, classify_outputs(defs[name])))
        elif task.method_name == api.REGRESS_METHOD:
            plan.append((task, name, regress_outputs(defs[name])))
        else:
            raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
    examples = serialized_examples(request.input)
    answer = pb.MultiInferenceResponse()
    for task, name, outputs in plan:
        results = await _run(model, name, examples, outputs)
        entry = answer.results.add()
        if task.method_name == api.CLASSIFY_METHOD:
            fill_classifications(entry.classification_result, results, len(examples))
        else:
            fill_regressions(entry.regression_result, results, len(examples))
        api.answer_spec(entry.model_spec, task.model_spec.name, version, task.model_spec.signature_name)
    return answer
