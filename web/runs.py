"""The run page (facts, attempts, the log) and its raw log, plain or as a live event stream."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from core.errors import BadInput, NotFound
from core.locks import line_text
from core.masking import MASK, is_sensitive_key, mask_mapping
from core.models import Attempt, Run
from core.numbers import INT32_MAX, bounded_int, shown
from core.service import RunDetail
from core.spec import ParameterSpec
from web import actions, present
from web.ansi import to_html
from web.context import HEADERS, HTML, WEB, WebContext
from web.live import Lines, Row, State, lines_event
from web.logview import html_batches

logger = logging.getLogger(__name__)
_FLUSH = 64 * 1024
# Runs of a lock's line listed on a run page.
_LINE_SHOWN = 20
_KEEPALIVE = 15.0


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


def _rerun_fields(ctx: WebContext, run: Run) -> list[tuple[ParameterSpec, str, str]]:
    """The job's parameters with the run's values, for the rerun form (secrets left empty)."""
    try:
        job = ctx.service.catalog.resolve(f"{run.app}/{run.job}").job
    except NotFound:
        return []
    # A secret (or secret-looking) value is never put back into the page: empty keeps it.
    return [(p, "", "empty keeps the run's value")
            if p.secret or is_sensitive_key(p.name)
            else (p, run.overrides.get(p.name, ""), "") for p in job.parameters]


def _approvals_required(ctx: WebContext, run: Run) -> int | None:
    """How many approvals the run's job asks for (None if it asks for none)."""
    if not run.spec_digest:
        return None
    try:
        approval = ctx.service.catalog.resolve(f"{run.app}/{run.job}").job.approval
    except NotFound:
        return None
    return approval.required if approval else None


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
    offer = await actions.offered(ctx, request, run)
    log_store = ctx.service.log_store
    log_attempts = sorted({a.index for a in detail.attempts} | set(log_store.attempts(run.id)))
    decisions = await ctx.service.approvals(run.id) if run.spec_digest else []
    place = await ctx.service.line_place(run)
    holder, line = await ctx.service.lock_line(run) if run.lock else (None, [])
    values: dict[str, Any] = {
        "run": run, "attempts": detail.attempts, "token": token,
        "live": not run.run_state.is_final,
        "browsing": ctx.access.is_browser(request),
        "links_back": present.links_back(run.origin),
        "overrides": {**mask_mapping(run.overrides),
                      **dict.fromkeys(run.secret_parameters, MASK)},
        "parameters": _rerun_fields(ctx, run) if offer.rerun else [],
        "approvals": decisions, "approvals_required": _approvals_required(ctx, run),
        "approved": [a for a in decisions if a.decision == "approved"],
        "can_approve": offer.approve,
        "can_cancel": offer.cancel, "can_rerun": offer.rerun, "refusal": offer.refusal,
        "account": ctx.account(request, request.path_qs),
        "attempt_seconds": _attempt_seconds,
        "log_attempts": log_attempts,
        # Its lock's line: where it stands, who holds the lock, and who waits.
        "lock_place": line_text(place) if place else None,
        "lock_holder": holder, "lock_line": line[:_LINE_SHOWN],
        "lock_more": len(line) - _LINE_SHOWN,
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
    detail = loaded[0]
    run = detail.run
    task = asyncio.current_task()
    if task is not None:
        ctx.streams.add(task)
    try:
        if "text/event-stream" in request.headers.get("Accept", ""):
            try:
                position = _position(request)
            except BadInput as exc:
                return web.Response(status=400, text=f"{exc}\n", headers=HEADERS)
            return await _events(ctx, request, run, position)
        return await _raw(ctx, request, detail)
    finally:
        if task is not None:
            ctx.streams.discard(task)


async def _raw(ctx: WebContext, request: web.Request, detail: RunDetail) -> web.StreamResponse:
    run = detail.run
    attempt_text = request.query.get("attempt")
    try:
        attempt = (None if attempt_text is None
                   else bounded_int(attempt_text, 0, INT32_MAX, name="attempt"))
    except BadInput as exc:
        return web.Response(status=400, text=f"{exc}\n", headers=HEADERS)
    follow = request.query.get("follow", "") in ("1", "true", "yes")
    if attempt is not None:
        missing = detail.missing_attempt(attempt, follow=follow)
        if missing:
            return web.Response(status=404, text=missing + "\n", headers=HEADERS)
    response = web.StreamResponse(headers={
        "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
        "Content-Disposition": f'inline; filename="{run.job}-{run.number}.log"',
    })
    await response.prepare(request)
    if not follow or run.run_state.is_final:
        await _copy_stored(ctx, response, run.id, attempt)
        await response.write_eof()
        return response
    buffer: list[str] = []
    size = 0
    previous = None
    lines = ctx.service.logs(run.id, attempt=attempt, follow=follow)
    async for index, line in lines:
        if index != previous and attempt is None and (previous is not None or index > 1):
            buffer.append(f"----- attempt {index} -----\n")
        previous = index
        buffer.append(line + "\n")
        size += len(line) + 1
        # While following, send each line at once; a finished log goes out in big pieces.
        if size >= _FLUSH or follow:
            await response.write("".join(buffer).encode())
            buffer, size = [], 0
    await response.write("".join(buffer).encode())
    await response.write_eof()
    return response


async def _copy_stored(ctx: WebContext, response: web.StreamResponse, run_id: str,
                      only: int | None) -> None:
    """The logs as they are stored (already masked), in large pieces."""
    store = ctx.service.log_store
    attempts = [only] if only is not None else store.attempts(run_id)
    for position, attempt in enumerate(attempts):
        pieces = store.read_text(run_id, attempt)
        first = await asyncio.to_thread(next, pieces, None)
        if first is None:
            continue
        if only is None and (position > 0 or attempt > 1):
            await response.write(f"----- attempt {attempt} -----\n".encode())
        piece: bytes | None = first
        while piece is not None:
            await response.write(piece)
            piece = await asyncio.to_thread(next, pieces, None)


def _position(request: web.Request) -> tuple[int, int]:
    """Where the client is: (attempt, lines of it already shown), from Last-Event-ID (the id
    of the last event it received) or ?from=ATTEMPT:LINES; BadInput if neither is that."""
    given = request.headers.get("Last-Event-ID")
    name = "Last-Event-ID"
    if not given:
        given, name = request.query.get("from", "1:0"), "from"
    attempt, colon, seen = given.partition(":")
    if not colon:
        raise BadInput(f"{name} must be ATTEMPT:LINES, not {shown(given)}")
    return (max(bounded_int(attempt, 0, INT32_MAX, name=f"{name}'s attempt"), 1),
            bounded_int(seen, 0, INT32_MAX, name=f"{name}'s line count"))


def _state_data(run: Run) -> str:
    return json.dumps({
        "state": run.state, "icon": present.icon(run.state),
        "word": present.state_word(run.state), "final": run.run_state.is_final,
        "started": present.timestamp(run.started_at),
        "finished": present.timestamp(run.finished_at),
        "duration": present.duration(run.duration), "reason": run.reason or "",
    })


async def _events(ctx: WebContext, request: web.Request, run: Run,
                  position: tuple[int, int]) -> web.StreamResponse:
    """Log lines ([attempt, number, text as safe HTML]) and state changes, until the end.

    A viewer that falls too far behind is cut off (without the `end` event): EventSource
    reconnects by itself with Last-Event-ID and catches up from the stored log."""
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    start, seen = position
    logger.info("live log opened", extra={"run_id": run.id})
    try:
        # `retry`: reconnect after a second (not the browsers' default three) when cut off.
        await response.write(b"retry: 1000\n\n" + _state_event(run))
        # Subscribed before catching up from the stored log, so no line falls between the two.
        async with ctx.live.subscribe(run.id) as viewer:
            viewer.on_drop = _cut_off(request, run.id)
            sent = await _catch_up(ctx, response, run.id, start, seen)
            ended = False
            while not ended and not viewer.dropped:
                batches = await viewer.take(_KEEPALIVE)
                if not batches and not viewer.dropped:
                    await response.write(b": keepalive\n\n")
                out: list[bytes] = []
                for batch in batches:
                    if batch is None:
                        ended = True
                    elif isinstance(batch, State):
                        out.append(_state_event(batch.run))
                    else:
                        out += _new_lines(batch, start, sent)
                if out:
                    await response.write(b"".join(out))  # one write for all that waited
        if not ended:
            return response
        # The log has ended: the run is final (or about to be; wait() reads the store).
        try:
            final = await asyncio.wait_for(ctx.service.wait(run.id), 30)
        except TimeoutError:
            final = await ctx.service.get_run(run.id)
        await response.write(_state_event(final))
        await response.write(b"event: end\ndata: {}\n\n")
    except ConnectionResetError:
        logger.info("live log closed", extra={"run_id": run.id})
    return response


def _cut_off(request: web.Request, run_id: str) -> Callable[[], None]:
    def drop() -> None:
        logger.info("live log viewer fell behind: cut off, it resumes from its last line",
                    extra={"run_id": run_id})
        # Also ends a write stuck on a viewer that stopped reading; what it has not received
        # whole, it asks for again.
        if request.transport is not None:
            request.transport.abort()

    return drop


def _new_lines(batch: Lines, start: int, sent: dict[int, int]) -> list[bytes]:
    """The batch's event, unless the catch-up from the stored log sent (some of) its lines."""
    first, last = batch.rows[0], batch.rows[-1]
    if first[0] >= start and first[1] > sent.get(first[0], 0):
        sent[last[0]] = last[1]
        return [batch.event]  # the usual case: encoded once for every viewer
    rows = [r for r in batch.rows if r[0] >= start and r[1] > sent.get(r[0], 0)]
    if not rows:
        return []
    sent[last[0]] = last[1]
    return [lines_event(rows)]


def _state_event(run: Run) -> bytes:
    return f"event: state\ndata: {_state_data(run)}\n\n".encode()


async def _catch_up(ctx: WebContext, response: web.StreamResponse, run_id: str, start: int,
                    seen: int) -> dict[int, int]:
    """Send what the stored log holds beyond the client's position; returns the last line per
    attempt."""
    sent: dict[int, int] = {}
    for attempt in ctx.service.log_store.attempts(run_id):
        if attempt < start:
            continue
        skip = seen if attempt == start else 0
        rows: list[Row] = []
        number = 0
        for number, text in enumerate(ctx.service.log_store.read_lines(run_id, attempt), 1):
            if number > skip:
                rows.append((attempt, number, to_html(text)))
            if len(rows) >= 2000:
                await response.write(lines_event(rows))
                rows = []
        if rows:
            await response.write(lines_event(rows))
        sent[attempt] = max(number, skip)
    return sent
