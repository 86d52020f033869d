"""`mlserver.handlers`: the decorator runtimes use to add REST routes of their own (see `custom`)."""

from gpuserve.mlserver.handlers.custom import CustomHandler, custom_handler, get_custom_handlers

__all__ = ["CustomHandler", "custom_handler", "get_custom_handlers"]
