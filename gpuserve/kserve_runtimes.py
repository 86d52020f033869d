"""KServe's built-in Python runtimes on gpuserve: `sklearnserver`, `xgbserver` and `lgbserver`, the commands
KServe's kserve-sklearnserver, kserve-xgbserver and kserve-lightgbmserver ServingRuntimes run (their images' entry
point is `python -m sklearnserver`, ...), with the same arguments: `--model_name NAME --model_dir /mnt/models
--http_port 8080` and the rest of KServe's ModelServer flags (`--grpc_port`, `--workers`, ...), `--nthread` for
XGBoost and LightGBM. A ServingRuntime moved to gpuserve's image keeps its args and sets `command: [sklearnserver]`
(or xgbserver, lgbserver).

Each model answers as KServe's does (its model.py): the one model file in the folder (`.joblib`, `.pkl`,
`.pickle`; `.bst`, `.json`, `.ubj` for XGBoost; `.bst` for LightGBM; two are refused), V1 instances or V2's first
input through `get_predict_input`, `predict` (`predict_proba` for scikit-learn with `PREDICT_PROBA=true`), the
answer through `get_predict_response` (V1 `predictions`, V2 `output-0`), a model's error an InferenceError (500).
When the folder holds no model file, each subfolder is a model of its own, as KServe's model repositories serve
them (multi-model serving), and the repository extension loads more by name. Folders are local (KServe's storage
initializer downloads `storageUri` to /mnt/models before the server starts).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional, Tuple

from gpuserve.errors import InferenceError, ModelMissingError
from gpuserve.model import Model
from gpuserve.model_repository import ModelRepository
from gpuserve.utils.utils import get_predict_input, get_predict_response

SKLEARN_FILES = (".joblib", ".pkl", ".pickle")
XGBOOST_FILES = (".bst", ".json", ".ubj")
LIGHTGBM_FILES = (".bst",)
PREDICT_PROBA = "PREDICT_PROBA"
DEFAULT_NTHREAD = 1


def model_file(model_dir: str, extensions: Tuple[str, ...]) -> str:
    """The one model file in `model_dir`, as KServe's runtimes look for it."""
    if "://" in model_dir:
        raise ModelMissingError(f"{model_dir} (gpuserve reads local folders: KServe's storage initializer "
                                "downloads storageUri to /mnt/models)")
    found = sorted(os.path.join(model_dir, f) for f in os.listdir(model_dir)
                   if os.path.isfile(os.path.join(model_dir, f)) and f.endswith(extensions)) \
        if os.path.isdir(model_dir) else []
    if not found:
        raise ModelMissingError(model_dir)
    if len(found) > 1:
        raise RuntimeError(f"More than one model file is detected, Only one is allowed within model_dir: {found}")
    return found[0]


class SKLearnModel(Model):
    def __init__(self, name: str, model_dir: str):
        super().__init__(name)
        self.model_dir = model_dir
        self.ready = False

    def load(self) -> bool:
        import joblib

        self._model = joblib.load(model_file(self.model_dir, SKLEARN_FILES))
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        try:
            instances = get_predict_input(payload)
            if os.environ.get(PREDICT_PROBA, "false").lower() == "true" and hasattr(self._model, "predict_proba"):
                result = self._model.predict_proba(instances)
            else:
                result = self._model.predict(instances)
            return get_predict_response(payload, result, self.name)
        except Exception as exc:
            raise InferenceError(str(exc)) from exc


class _BoosterModel(Model):
    """KServe's XGBoost and LightGBM models: a booster from the folder (or given), `nthread` threads a call."""

    def __init__(self, name: str, model_dir: str, nthread: int = DEFAULT_NTHREAD, booster=None):
        super().__init__(name)
        self.model_dir = model_dir
        self.nthread = nthread
        if booster is not None:
            self._booster = booster
            self.ready = True


class XGBoostModel(_BoosterModel):
    def load(self) -> bool:
        import xgboost as xgb

        with open(model_file(self.model_dir, XGBOOST_FILES), "rb") as f:
            self._booster = xgb.Booster(params={"nthread": self.nthread}, model_file=bytearray(f.read()))
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        import xgboost as xgb

        try:
            matrix = xgb.DMatrix(get_predict_input(payload), nthread=self.nthread)
            return get_predict_response(payload, self._booster.predict(matrix), self.name)
        except Exception as exc:
            raise InferenceError(str(exc)) from exc


class LightGBMModel(_BoosterModel):
    def load(self) -> bool:
        from lightgbm import Booster

        self._booster = Booster(params={"nthread": self.nthread}, model_file=model_file(self.model_dir, LIGHTGBM_FILES))
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        try:
            instances = get_predict_input(payload, columns=self._booster.feature_name())
            return get_predict_response(payload, self._booster.predict(instances), self.name)
        except Exception as exc:
            raise InferenceError(str(exc)) from exc


class RuntimeRepository(ModelRepository):
    """KServe's runtimes' model repositories: each subfolder of the folder a model (loaded at start), and a
    repository-extension load of NAME loads `model_dir/NAME`."""

    def __init__(self, model_dir: str, make: Callable[[str, str], Model]):
        super().__init__(model_dir)
        self.make = make
        self.load_models()

    async def load(self, name: str) -> bool:
        return self.load_model(name)

    def load_model(self, name: str) -> bool:
        model = self.make(name, os.path.join(self.models_dir, name))
        if model.load():
            self.update(model)
        return model.ready


RUNTIMES: Dict[str, Callable[[argparse.Namespace], Callable[[str, str], Model]]] = {
    "sklearnserver": lambda args: SKLearnModel,
    "xgbserver": lambda args: lambda name, folder: XGBoostModel(name, folder, args.nthread),
    "lgbserver": lambda args: lambda name, folder: LightGBMModel(name, folder, args.nthread),
}


def serve(runtime: str, argv: Optional[List[str]] = None) -> int:
    """KServe's `python -m RUNTIME` main: the model in --model_dir, else its subfolders' models."""
    from gpuserve import ModelServer
    from gpuserve.logging import configure_logging
    from gpuserve.model_server import parser as server_parser

    parser = argparse.ArgumentParser(prog=runtime, parents=[server_parser])
    parser.add_argument("--model_dir", required=True, help="A local path to the model directory")
    if runtime != "sklearnserver":
        parser.add_argument("--nthread", default=DEFAULT_NTHREAD, type=int, help="threads of each model's calls")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.configure_logging:
        configure_logging(args.log_config_file)
    make = RUNTIMES[runtime](args)
    model = make(args.model_name, args.model_dir)
    workers = {"workers": 1} if runtime == "lgbserver" else {}  # (KServe's: LightGBM in one process)
    try:
        model.load()
    except ModelMissingError:
        import logging

        logging.getLogger("gpuserve").error(
            "failed to locate model file for model %s under dir %s, trying loading from model repository.",
            args.model_name, args.model_dir)
        ModelServer(registered_models=RuntimeRepository(args.model_dir, make), **workers).start([])
        return 0
    ModelServer(**workers).start([model])
    return 0


def sklearnserver() -> int:
    return serve("sklearnserver")


def xgbserver() -> int:
    return serve("xgbserver")


def lgbserver() -> int:
    return serve("lgbserver")


if __name__ == "__main__":  # python -m gpuserve.kserve_runtimes RUNTIME ARGS...
    sys.exit(serve(sys.argv[1], sys.argv[2:]))
