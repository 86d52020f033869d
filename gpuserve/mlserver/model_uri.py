"""Where a model's artefact is: MLServer's `get_model_uri` (imported as `mlserver.utils.get_model_uri`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional
from urllib.parse import urlparse

from gpuserve.mlserver.errors import InvalidModelURI


async def get_model_uri(settings: Any, wellknown_filenames: Optional[List[str]] = None) -> str:
    """The artefact `parameters.uri` names, relative to the model's folder; for a folder, the first
    of `wellknown_filenames` found in it (else the folder itself). Non-file URIs come back as given."""
    parameters = getattr(settings, "parameters", None)
    uri = getattr(parameters, "uri", None) if parameters is not None else None
    folder = getattr(settings, "folder", None)
    if not uri:
        if not folder:
            raise InvalidModelURI(getattr(settings, "name", ""))
        uri = folder
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file") and not (len(parsed.scheme) == 1 and os.name == "nt"):
        return uri
    path = Path(parsed.path if parsed.scheme == "file" else uri)
    if not path.is_absolute() and folder:
        path = Path(folder) / path
    if path.is_file():
        return str(path)
    if path.is_dir():
        for name in wellknown_filenames or []:
            candidate = path / name
            if candidate.is_file():
                return str(candidate)
        return str(path)
    raise InvalidModelURI(getattr(settings, "name", ""), str(path))


__all__ = ["get_model_uri"]
