"""The errors each operation can answer, written into the OpenAPI schema.

FastAPI documents a route's success and, where it has parameters, a 422 in its own
shape (``HTTPValidationError``), which is not what this API sends: every error is
an ``ErrorBody`` (``{"code", "message", "details"}``; docs/protocol.md). So after
FastAPI builds the schema, each operation gets the statuses it can answer, derived
from the route itself, each with the codes of ``idlegrid/errors.py`` that map to
that status:

- every operation: ``500 internal``, and ``4XX`` for the other client errors a
  service may raise (409, 410, 429, …);
- one with parameters or a body: ``422 invalid_request``;
- one that takes a body (POST, PUT, PATCH, DELETE): ``413`` and ``408``;
- one with path parameters: ``404``;
- one that depends on a signature or an API key (``signed``, which also names the
  endpoints that check one by hand, as the heartbeat does): ``401`` and ``403``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from idlegrid.errors import ERRORS_BY_CODE, IdlegridError
from idlegrid.protocol import ErrorBody

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SUMMARY = {
    401: "Not provably from the signer",
    403: "The signer may not act on this resource",
    404: "No such resource",
    408: "The body did not arrive in time (the connection is closed)",
    413: "The body is too large",
    422: "The request is malformed or its values are out of range",
    500: "The server failed unexpectedly (logged there; never a traceback)",
}


def codes_for(status: int) -> list[str]:
    """The error codes that ``errors.py`` maps to ``status``."""
    return sorted(
        code
        for code, cls in ERRORS_BY_CODE.items()
        if cls.http_status == status and cls is not IdlegridError
    )


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _status_response(status: int) -> dict[str, Any]:
    codes = ", ".join(f"`{c}`" for c in codes_for(status))
    return _error_response(f"{SUMMARY[status]}: {codes}")


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    out: set[Callable[..., Any]] = set()
    for dep in dependant.dependencies:
        if dep.call is not None:
            out.add(dep.call)
        out |= _calls(dep)
    return out


def error_statuses(
    dependant: Dependant, method: str, signed: Collection[Callable[..., Any]]
) -> set[int]:
    """The error statuses that an operation of ``method`` with ``dependant`` (what it
    takes, what it depends on) can answer. ``signed``: the dependencies that
    authenticate, and endpoints that authenticate by hand."""
    out = {500}
    if method in BODY_METHODS:
        out |= {408, 413, 422}
    if dependant.path_params:
        out.add(404)
    if dependant.path_params or dependant.query_params or dependant.body_params:
        out.add(422)
    if ({dependant.call} | _calls(dependant)) & set(signed):
        out |= {401, 403}
    return out


def add_error_responses(
    schema: dict[str, Any], routes: list[BaseRoute], signed: Collection[Callable[..., Any]]
) -> None:
    """Write every operation's error responses into ``schema`` (in place)."""
    schema.setdefault("components", {}).setdefault("schemas", {})["ErrorBody"] = (
        ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    client = sorted({c.http_status for c in ERRORS_BY_CODE.values() if 400 <= c.http_status < 500})
    others = ", ".join(str(s) for s in client)
    for route in iter_route_contexts(routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        dependant: Dependant = route.dependant  # with its routers' dependencies
        for method in route.methods or ():
            operation = schema["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:  # not in the schema (the explorer's pages)
                continue
            responses = operation.setdefault("responses", {})
            for status in error_statuses(dependant, method, signed):
                responses[str(status)] = _status_response(status)
            responses["4XX"] = _error_response(
                f"Another client error (statuses {others}): `code` says which"
            )
            # In order of status; the 4XX range after the 4xx it names.
            operation["responses"] = dict(
                sorted(responses.items(), key=lambda item: item[0].replace("XX", "99"))
            )
    # FastAPI's own 422 shapes are no longer referenced: this API never sends them.
    text = repr(schema["paths"])
    for name in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{name}'" not in text:
            schema["components"]["schemas"].pop(name, None)


def document_errors(app: FastAPI, signed: Collection[Callable[..., Any]]) -> None:
    """Make ``app.openapi()`` include the error responses. FastAPI caches the schema
    and builds it again when the routes change; each new one is completed once."""
    generate = app.openapi
    completed: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = generate()
        if not completed or completed[0] is not schema:
            add_error_responses(schema, app.routes, signed)
            completed[:] = [schema]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
