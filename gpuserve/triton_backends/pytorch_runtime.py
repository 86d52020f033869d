"""Triton's PyTorch runtime in Python: `backend: "pytorch"` with `runtime: "model.py"`.

Such a model's version folder holds a `model.py` defining a torch.nn.Module subclass (its weights, if any,
in a `model.pt` state dict beside it), or only a TorchScript `model.pt`; `default_model_filename` names
another file. Triton runs it through its Python backend with the PyTorch backend's own model.py; gpuserve
serves it the same way, with this file as that model.py (triton_config.settings_from_config points the
model here). Parameters, as Triton's runtime reads them: NUM_THREADS and NUM_INTEROP_THREADS (default 1),
TORCH_COMPILE_OPTIONAL_PARAMETERS (JSON keyword arguments for torch.compile, which wraps a model.py module).
Requests of a batching model run as one batch, their rows concatenated; outputs go by position, in the
config's output order. Log lines are Triton's runtime's words (its qa greps them).
"""

import importlib.util
import json
import os

import numpy as np

from gpuserve import triton_pb_utils as pb_utils


def _parameters(config):
    found = config.get("parameters") or {}
    if isinstance(found, list):  # `parameters [ { key: ... value: ... } ]` as a list of entries
        found = {entry.get("key"): entry.get("value") or {} for entry in found}
    return {key: str((value or {}).get("string_value", "")) for key, value in found.items()}


def _model_file(folder, config):
    names = [config.get("default_model_filename") or "", "model.py", "model.pt"]
    for name in filter(None, names):
        if os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise pb_utils.TritonModelException(f"No model found in {folder}/{[n for n in names if n]}")


def _module_class(path, name):
    import torch

    spec = importlib.util.spec_from_file_location(f"gpuserve_torch_runtime_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for key in sorted(vars(module)):  # the first by name, as Triton's runtime looks (defined here, not imported)
        value = getattr(module, key)
        if isinstance(value, type) and issubclass(value, torch.nn.Module) and value.__module__ == module.__name__:
            return value
    raise pb_utils.TritonModelException("Cannot find a subclass of torch.nn.Module")


class TritonPythonModel:
    def initialize(self, args):
        import torch

        self.name = args["model_name"]
        config = json.loads(args["model_config"])
        where = f"for '{self.name}'"
        self.batching = int(config.get("max_batch_size") or 0) > 0
        self.inputs = [t["name"] for t in config.get("input", [])]
        self.outputs = [t["name"] for t in config.get("output", [])]
        parameters = _parameters(config)
        said = ""
        for key, setter in (("NUM_THREADS", torch.set_num_threads), ("NUM_INTEROP_THREADS",
                                                                      torch.set_num_interop_threads)):
            value = parameters.get(key) or "1"
            try:
                setter(int(value))
            except RuntimeError:  # inter-op threads are set once a process (another model set them first)
                pass
            said += f"{key} = {value}; "
        pb_utils.Logger.log_verbose(f"Torch parallelism settings {where}: {said}")
        options = json.loads(parameters["TORCH_COMPILE_OPTIONAL_PARAMETERS"]) \
            if parameters.get("TORCH_COMPILE_OPTIONAL_PARAMETERS") else {}
        if "model" in options:
            raise pb_utils.TritonModelException("'model' is not an optional parameter for 'torch.compile'")
        pb_utils.Logger.log_verbose(f"'torch.compile' optional parameter(s) {where}: {options}")
        kind = args.get("model_instance_kind", "CPU")
        self.device = torch.device(f"cuda:{args.get('model_instance_device_id', '0')}" if kind == "GPU" else "cpu")
        path = _model_file(os.path.join(args["model_repository"], args["model_version"]), config)
        if not path.endswith(".py"):
            pb_utils.Logger.log_info(f"Loading '{self.name}' as TorchScript")
            self.model = torch.jit.load(path, map_location=self.device).eval()
            return
        module = _module_class(path, self.name)()
        weights = path[:-len(".py")] + ".pt"
        if os.path.exists(weights):
            module.load_state_dict(torch.load(weights, map_location=self.device))
        else:
            pb_utils.Logger.log_info(f"Model parameter file not found {where}")
        self.eager = module.to(self.device).eval()
        self.model = torch.compile(self.eager, **options)

    def execute(self, requests):
        import torch

        per_request = [[torch.from_numpy(np.array(pb_utils.get_input_tensor_by_name(r, n).as_numpy()))
                        .to(self.device) for n in self.inputs] for r in requests]
        if self.batching:
            sizes = [tensors[0].shape[0] for tensors in per_request]
            batches = [[torch.cat(column) for column in zip(*per_request)]]
        else:
            sizes, batches = None, per_request
        results = [self._run(tensors) for tensors in batches]
        if self.batching:
            split = [torch.split(out, sizes) for out in results[0]]
            results = [[parts[i] for parts in split] for i in range(len(requests))]
        return [pb_utils.InferenceResponse([pb_utils.Tensor(name, out.detach().cpu().numpy())
                                            for name, out in zip(self.outputs, outputs)]) for outputs in results]

    def _run(self, tensors):
        import torch

        with torch.inference_mode():
            try:
                outputs = self.model(*tensors)
            except Exception as exc:
                if self.model is getattr(self, "eager", None) or getattr(self, "eager", None) is None:
                    raise
                # torch.compile needs a working compiler toolchain; without one the module still serves, eagerly
                pb_utils.Logger.log_warn(f"'torch.compile' failed for '{self.name}' ({type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0] if str(exc) else ''}); running it eagerly")
                self.model = self.eager
                outputs = self.model(*tensors)
        return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
