"""`kserve.logging`: the loggers KServe scripts log to, and `configure_logging(log_config)`.

`logger` is gpuserve's own ("gpuserve"), so a script's lines and the server's share one format.
`configure_logging` takes what KServe's takes: nothing (gpuserve's format at `KSERVE_LOGLEVEL`), a
dictConfig dict, or a path to a .json / .yaml / .yml dictConfig or a fileConfig .ini file."""

from __future__ import annotations

import json
import logging
import logging.config
from typing import Dict, Optional, Union

from gpuserve.constants.constants import KSERVE_LOGLEVEL

logger = logging.getLogger("gpuserve")
trace_logger = logging.getLogger("gpuserve.trace")


def configure_logging(log_config: Optional[Union[Dict, str]] = None) -> None:
    if log_config is None:
        from gpuserve.logging_setup import configure_logging as text_logging
        from gpuserve.settings import ServerSettings

        text_logging(ServerSettings.model_construct(log_level=KSERVE_LOGLEVEL))
    elif isinstance(log_config, dict):
        logging.config.dictConfig(log_config)
    elif log_config.endswith(".json"):
        with open(log_config) as file:
            logging.config.dictConfig(json.load(file))
    elif log_config.endswith((".yaml", ".yml")):
        import yaml

        with open(log_config) as file:
            logging.config.dictConfig(yaml.safe_load(file))
    else:
        logging.config.fileConfig(log_config, disable_existing_loggers=False)
