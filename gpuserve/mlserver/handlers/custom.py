"""`mlserver.handlers.custom`: extra REST routes a runtime declares on its own methods.

MLServer's MLflow runtime serves `/invocations` this way, and users add theirs the same way:

    @custom_handler(rest_path="/my-endpoint", rest_method="POST")
    async def my_endpoint(self, payload: dict) -> dict: ...

The decorator only marks the method; the REST server (gpuserve/server/rest/custom_routes.py) finds the
marks on a loaded model and serves each method as a FastAPI endpoint, so its parameters are read from
the request by their annotations (a `Request`, a body model, query values, headers) as MLServer's
FastAPI app reads them. The mark's attribute name is MLServer's, so a method marked by either package
is found.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Tuple

from pydantic import BaseModel

MARK = "__custom_handler__"


class CustomHandler(BaseModel):
    rest_path: str
    rest_method: str = "POST"


def register_custom_handler(handler: CustomHandler, method: Callable) -> None:
    setattr(method, MARK, handler)


def custom_handler(rest_path: str, rest_method: str = "POST") -> Callable[[Callable], Callable]:
    """Serve the decorated model method at `rest_path` for `rest_method` requests while the model is loaded."""

    def mark(method: Callable) -> Callable:
        register_custom_handler(CustomHandler(rest_path=rest_path, rest_method=rest_method), method)
        return method

    return mark


_BY_CLASS: Dict[type, List[Tuple[str, Any]]] = {}


def _marked_names(cls: type) -> List[Tuple[str, Any]]:
    """(attribute name, mark) of a class's marked methods, looked up once per class. Read from the class,
    so that properties of an instance are never evaluated just to look for marks."""
    found = _BY_CLASS.get(cls)
    if found is None:
        found = []
        for name in dir(cls):
            attr = inspect.getattr_static(cls, name, None)
            if isinstance(attr, (staticmethod, classmethod)):
                attr = attr.__func__
            mark = getattr(attr, MARK, None) if callable(attr) else None
            if mark is not None:
                found.append((name, mark))
        _BY_CLASS[cls] = found
    return found


def get_custom_handlers(model: Any) -> List[Tuple[CustomHandler, Callable]]:
    """(mark, bound method) for each marked method of `model`, its class's and any set on the instance."""
    marked = _marked_names(type(model))
    handlers = [(mark, getattr(model, name)) for name, mark in marked]
    names = {name for name, _ in marked}
    for name, value in list(getattr(model, "__dict__", {}).items()):
        mark = getattr(value, MARK, None) if callable(value) else None
        if mark is not None and name not in names:
            handlers.append((mark, value))
    return handlers


def served_handlers(model: Any) -> List[Tuple[Any, Callable]]:
    """gpuserve: the routes a served model brings. A stand-in for parallel workers says which its workers
    answer (`__gpuserve_custom_handlers__`); an adapter around an MLServer runtime (`runtime`) brings the
    runtime's marked methods."""
    own = getattr(model, "__gpuserve_custom_handlers__", None)
    if own is not None:
        return own()
    return get_custom_handlers(getattr(model, "runtime", model))


__all__ = ["CustomHandler", "custom_handler", "register_custom_handler", "get_custom_handlers"]
