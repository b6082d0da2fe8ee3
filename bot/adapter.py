"""The HTTP edge: aiohttp requests to Bolt requests and Bolt responses back (two functions)."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse


async def to_bolt_request(request: web.Request) -> AsyncBoltRequest:
    # The raw body as received: the signature is computed over these exact bytes.
    body = (await request.read()).decode("utf-8")
    headers: dict[str, str | Sequence[str]] = {
        name.lower(): request.headers.getall(name) for name in request.headers}
    return AsyncBoltRequest(body=body, query=request.query_string, headers=headers)


def to_aiohttp_response(bolt_response: BoltResponse) -> web.Response:
    headers = bolt_response.first_headers_without_set_cookie()
    content_type = headers.pop("content-type", None) or (
        "application/json" if bolt_response.body.startswith("{") else "text/plain")
    return web.Response(status=bolt_response.status, body=bolt_response.body.encode(),
                        headers=headers, content_type=content_type.split(";")[0].strip())
