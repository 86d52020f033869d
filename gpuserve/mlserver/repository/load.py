"""One `model-settings.json` read as MLServer's repository reads it: the name defaults to the folder's and the
uri to the folder itself."""

from __future__ import annotations

import os

from gpuserve.mlserver.settings import ModelParameters, ModelSettings


def load_model_settings(model_settings_path: str) -> ModelSettings:
    settings = ModelSettings.from_file(model_settings_path)  # the folder's name where the file names none
    folder = os.path.dirname(os.path.abspath(model_settings_path))
    if not settings.parameters:
        settings.parameters = ModelParameters()
    if not settings.parameters.uri:
        settings.parameters.uri = folder
    return settings
