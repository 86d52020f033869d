"""MLflow PythonModel sources saved "from code" by tests/test_mlflow_runtime.py and by
benchmarks/peers/mlflow_conformance.py (the same models asked of MLServer), so both ask about one model."""

COLUMNS_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class Scaled(PythonModel):
    def predict(self, context, model_input, params=None):
        return (model_input["a"] + model_input["b"]) * (params or {}).get("scale", 1.0)


mlflow.models.set_model(Scaled())
"""

TENSORS_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class Sum(PythonModel):
    def predict(self, context, model_input, params=None):
        return {"sum": model_input["x"] + model_input["y"], "diff": model_input["x"] - model_input["y"]}


mlflow.models.set_model(Sum())
"""


def nested_model(answer: str) -> str:
    """A column of arrays summed per row; `answer` wraps the list of sums ("np.array" for MLServer, which
    fails a plain list's answer with a 500, where gpuserve sends it: the test keeps the list)."""
    return f"""
import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class Totals(PythonModel):
    def predict(self, context, model_input, params=None):
        return {answer}([float(sum(row)) for row in model_input["items"]])


mlflow.models.set_model(Totals())
"""
