"""The local web page of ``hazefree serve`` (see :mod:`hazefree.web.server`).

Importing this package needs neither FastAPI nor uvicorn; :func:`~hazefree.web.server.create_app`
and :func:`~hazefree.web.server.serve` import them and say how to install them if missing.
"""

from .server import ServeConfig, WebDependencyError, create_app, serve

__all__ = ["ServeConfig", "WebDependencyError", "create_app", "serve"]
