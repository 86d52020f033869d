"""Cross-origin requests on the HTTP endpoint, as MLServer serves them when its `cors_settings` are given.

MLServer adds Starlette's CORSMiddleware to its app; gpuserve wraps its app in the same middleware, so
preflight answers and the headers on other answers are Starlette's, byte for byte. Our HTTP/1.1 server
sends a request that carries an `Origin` header through the wrapped app rather than its inference fast
path (server/rest/http11.py): a request without one is answered as before, and CORS costs nothing to
clients that are not browsers.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

MIDDLEWARE_ARGS = ("allow_origins", "allow_origin_regex", "allow_credentials", "allow_methods", "allow_headers",
                   "expose_headers", "max_age")


def with_cors(app: Callable, cors: Optional[Dict[str, Any]]) -> Callable:
    """`app` wrapped in CORSMiddleware with these settings (MLServer's defaults for those not given)."""
    if cors is None:
        return app
    from starlette.middleware.cors import CORSMiddleware

    defaults = {"allow_origins": [], "allow_origin_regex": None, "allow_credentials": False,
                "allow_methods": ["GET"], "allow_headers": [], "expose_headers": [], "max_age": 600}
    given = {key: value for key, value in cors.items() if value is not None}
    unknown = sorted(set(given) - set(MIDDLEWARE_ARGS))
    if unknown:
        from gpuserve.errors import InvalidSettings

        raise InvalidSettings(f"cors settings {unknown} are not known; expected some of {list(MIDDLEWARE_ARGS)}")
    return CORSMiddleware(app, **{**defaults, **given})
