"""A JSON body parsed by the route itself, still documented in the OpenAPI schema.

FastAPI's body parameters go through its dependency solver: on the hottest
route (`POST /v1/chat/completions`) the solver, `json.loads` and the
field-by-field validation were about 4% of a gateway's CPU per streamed request
(bench/gateway_overhead.py). A route that takes only the `Request` skips the
solver; `parse_json_body` validates the raw bytes in pydantic-core in one step
and raises FastAPI's own `RequestValidationError`, so a bad body gets exactly
the 400 every other route gives. `json_body_openapi` and
`document_models` keep the body in `/openapi.json` and `/docs`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)

_REF_TEMPLATE = "#/components/schemas/{model}"


async def parse_json_body(request: Request, model: type[Model]) -> Model:
    """The request's body as `model`; 400 (through the app's validation handler) when it is not one."""
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        # Located under "body", as FastAPI locates the errors of body parameters.
        problems = [
            {**problem, "loc": ("body", *problem["loc"])} for problem in exc.errors(include_url=False)
        ]
        raise RequestValidationError(problems, body=body) from None


def json_body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is `model` (register it with `document_models`)."""
    schema_ref = {"$ref": _REF_TEMPLATE.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema_ref}}}}


def document_models(app: FastAPI, *models: type[BaseModel]) -> None:
    """Add `models` (and the models they use) to the app's OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            schema = model.model_json_schema(ref_template=_REF_TEMPLATE)
            for name, definition in schema.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components.setdefault(model.__name__, schema)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
