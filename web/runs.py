"""The run page (facts, attempts, the log) and its raw log, plain or as a live event stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from core.errors import BadInput, NotFound
from core.masking import mask_mapping
from core.models import Attempt, Run
from core.service import RunDetail
from web import present
from web.context import HEADERS, HTML, WEB, WebContext
from web.logview import html_batches, line_html

logger = logging.getLogger(__name__)
_FLUSH = 64 * 1024
_KEEPALIVE = 15.0
_STATE_POLL = 2.0  # runs driven by another process are only seen by polling the store


async def _load(ctx: WebContext, request: web.Request) -> tuple[RunDetail, str] | web.Response:
    """The run and a token for its links, or the error page; a bad token shows nothing."""
    run_id = request.match_info["id"]
    token = ctx.access.run_token(request, run_id)
    if token is None:
        logger.info("refused run page without a valid link token", extra={"run_id": run_id})
        return ctx.error(403, "This link is not valid",
                         "The link is wrong or has expired. Open the run again from Slack, "
                         "GitHub or `jobbot runs`.")
    try:
        return await ctx.service.detail(run_id), token
    except NotFound as exc:
        return ctx.error(404, "No such run", str(exc))
    except BadInput as exc:
        return ctx.error(400, "Not a run", str(exc))


def _attempt_seconds(attempt: Attempt) -> float | None:
    if attempt.finished_at is None:
        return None
    return (attempt.finished_at - attempt.started_at).total_seconds()


async def run_page(request: web.Request) -> web.StreamResponse:
    ctx = request.app[WEB]
    loaded = await _load(ctx, request)
    if isinstance(loaded, web.Response):
        return loaded
    detail, token = loaded
    run = detail.run
    log_store = ctx.service.log_store
    log_attempts = sorted({a.index for a in detail.attempts} | set(log_store.attempts(run.id)))
    values: dict[str, Any] = {
        "run": run, "attempts": detail.attempts, "token": token,
        "live": not run.run_state.is_final,
        "browsing": ctx.access.is_browser(request),
        "links_back": present.links_back(run.origin),
        "overrides": mask_mapping(run.overrides),
        # Page actions need a Slack or GitHub identity (see README, "Pages"): none yet.
        "can_cancel": False, "can_rerun": False,
        "attempt_seconds": _attempt_seconds,
        "log_attempts": log_attempts,
        "log_batches": lambda a: html_batches(a, log_store.read_lines(run.id, a)),
    }
    response = web.StreamResponse(headers={**HEADERS, "Content-Type": HTML})
    await response.prepare(request)
    # Rendered and sent piece by piece: a 100,000-line log is never held whole in memory.
    buffer: list[str] = []
    size = 0
    for piece in ctx.stream("run.html", values):
        buffer.append(piece)
        size += len(piece)
        if size >= _FLUSH:
            await response.write("".join(buffer).encode())
            buffer, size = [], 0
    await response.write("".join(buffer).encode())
    await response.write_eof()
    return response


async def run_logs(request: web.Request) -> web.StreamResponse:
    """Raw text (`?follow=1` streams until the run ends; `?attempt=N`), or server-sent events."""
    ctx = request.app[WEB]
    loaded = await _load(ctx, request)
    if isinstance(loaded, web.Response):
        return loaded
    run = loaded[0].run
    task = asyncio.current_task()
    if task is not None:
        ctx.streams.add(task)
    try:
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await _events(ctx, request, run)
        return await _raw(ctx, request, run)
    finally:
        if task is not None:
            ctx.streams.discard(task)


async def _raw(ctx: WebContext, request: web.Request, run: Run) -> web.StreamResponse:
    attempt_text = request.query.get("attempt")
    if attempt_text is not None and not attempt_text.isdigit():
        return web.Response(status=400, text=f"attempt must be a number, not {attempt_text!r}\n")
    follow = request.query.get("follow", "") in ("1", "true", "yes")
    response = web.StreamResponse(headers={
        "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
        "Content-Disposition": f'inline; filename="{run.job}-{run.number}.log"',
    })
    await response.prepare(request)
    buffer: list[str] = []
    size = 0
    shown = None
    lines = ctx.service.logs(run.id, attempt=int(attempt_text) if attempt_text else None,
                             follow=follow)
    async for attempt, line in lines:
        if attempt != shown and attempt_text is None and (shown is not None or attempt > 1):
            buffer.append(f"----- attempt {attempt} -----\n")
        shown = attempt
        buffer.append(line + "\n")
        size += len(line) + 1
        # While following, send each line at once; a finished log goes out in big pieces.
        if size >= _FLUSH or follow:
            await response.write("".join(buffer).encode())
            buffer, size = [], 0
    await response.write("".join(buffer).encode())
    await response.write_eof()
    return response


def _position(request: web.Request) -> tuple[int, int]:
    """Where the client is: (attempt, lines of it already shown), from Last-Event-ID or ?from=."""
    text = request.headers.get("Last-Event-ID") or request.query.get("from", "1:0")
    attempt, _, seen = text.partition(":")
    if attempt.isdigit() and seen.isdigit():
        return max(int(attempt), 1), int(seen)
    return 1, 0


def _state_data(run: Run) -> str:
    return json.dumps({
        "state": run.state, "icon": present.icon(run.state),
        "word": present.state_word(run.state), "final": run.run_state.is_final,
        "started": present.timestamp(run.started_at),
        "finished": present.timestamp(run.finished_at),
        "duration": present.duration(run.duration), "reason": run.reason or "",
    })


async def _events(ctx: WebContext, request: web.Request, run: Run) -> web.StreamResponse:
    """Log lines (as HTML rows) and state changes, until the run ends or the client leaves."""
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    start, seen = _position(request)
    pending: list[tuple[int, int, str]] = []
    wake = asyncio.Event()
    done = asyncio.Event()
    logger.info("live log opened", extra={"run_id": run.id})

    async def pump() -> None:
        counts: dict[int, int] = {}
        async for attempt, line in _lines(ctx, run.id, start):
            number = counts[attempt] = counts.get(attempt, 0) + 1
            if attempt == start and number <= seen:
                continue
            pending.append((attempt, number, line))
            wake.set()
            if len(pending) % 500 == 0:
                await asyncio.sleep(0)  # a big chunk read at once: let the writer send some
        done.set()
        wake.set()

    pumping = asyncio.create_task(pump(), name=f"live-log-{run.id}")
    last_state = run.state
    loop = asyncio.get_running_loop()
    checked = written = loop.time()
    try:
        await response.write(f"event: state\ndata: {_state_data(run)}\n\n".encode())
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), _STATE_POLL)
            wake.clear()
            if pending:
                batch = pending[:]
                pending.clear()
                rows = [[a, n, line_html(a, n, text)] for a, n, text in batch]
                last = batch[-1]
                await response.write(
                    f"id: {last[0]}:{last[1]}\nevent: lines\ndata: {json.dumps(rows)}\n\n".encode())
                written = loop.time()
            # The state is read at most once a second per client, not once per line.
            if done.is_set() or loop.time() - checked >= 1.0:
                checked = loop.time()
                current = await ctx.service.get_run(run.id)
                if current.state != last_state or done.is_set():
                    last_state = current.state
                    await response.write(
                        f"event: state\ndata: {_state_data(current)}\n\n".encode())
                    written = loop.time()
            if loop.time() - written >= _KEEPALIVE:
                await response.write(b": keepalive\n\n")
                written = loop.time()
            if done.is_set() and not pending:
                await response.write(b"event: end\ndata: {}\n\n")
                break
    except ConnectionResetError:
        logger.info("live log closed by the client", extra={"run_id": run.id})
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
    return response


async def _lines(ctx: WebContext, run_id: str, start: int) -> AsyncIterator[tuple[int, str]]:
    """The run's lines from attempt `start` on, following until it ends."""
    async for attempt, line in ctx.service.logs(run_id, follow=True):
        if attempt >= start:
            yield attempt, line
