"""GET /metrics: jobbot's Prometheus metrics, for a scraper holding JOBBOT_METRICS_TOKEN."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.metrics import REGISTRY
from web.context import WEB

logger = logging.getLogger(__name__)
_REALM = 'Bearer realm="jobbot metrics"'


async def metrics(request: web.Request) -> web.Response:
    """Bearer token when JOBBOT_METRICS_TOKEN is set; open only when JOBBOT_METRICS_OPEN says so.

    Job and app names and failure counts are not for everyone who can reach the Slack and
    GitHub endpoints, so the default is closed."""
    ctx = request.app[WEB]
    token = ctx.metrics_token
    if token is None and not ctx.metrics_open:
        return web.Response(status=403, text="/metrics is off: set JOBBOT_METRICS_TOKEN (and "
                            "scrape with it as a bearer token) or JOBBOT_METRICS_OPEN=true\n")
    if token is not None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if not given:
            return web.Response(status=401, text="/metrics needs a bearer token\n",
                                headers={"WWW-Authenticate": _REALM})
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 token.encode()):
            logger.warning("refused /metrics: wrong bearer token from %s", request.remote)
            return web.Response(status=401, text="wrong bearer token for /metrics\n",
                                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'})
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
