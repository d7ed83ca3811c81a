"""What every route module shares: JSON bodies in and out (orjson), the OpenAI route prefixes, and scheduler
refusals (`Failed`) as OpenAI-shaped HTTP errors."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel

from backend.api.schemas import ApiError
from backend.messages import Failed

PREFIXES = ("/v1", "/api/oai", "/api/oai/v1")  # /v1: the openai SDK's default path, as vLLM and llama.cpp serve
FAILED_STATUS = {"overloaded": 429, "invalid_request": 400, "duplicate_id": 400, "unknown_id": 404, "draining": 503}


async def read_json(request: web.Request) -> Any:
    """The body as JSON; 400 when it is not JSON (413 for a huge body comes from aiohttp's client_max_size)."""
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, f"body is not valid JSON: {e}", code="invalid_json") from None


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer; a response model (api/schemas.py) is written with every field it declares."""
    if isinstance(body, BaseModel):
        body = body.model_dump(mode="json")
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def failed_error(event: Failed) -> ApiError:
    """A request the scheduler refused, as the HTTP error its code maps to."""
    status = FAILED_STATUS.get(event.code, 500)
    return ApiError(status, event.message, param=event.param, code=event.code,
                    type="invalid_request_error" if status < 500 else "server_error")  # fmt: skip
