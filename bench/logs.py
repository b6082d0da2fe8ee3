"""Benchmark: live logs of a run printing 100,000 lines to 20 followers, and a big finished page.

A jobbot server (the pages, a SQLite store, the local executor) runs in a child process so its
CPU can be read from /proc. Each round: 20 clients follow the run's live log through jobbot's
server-sent events, then (baseline) 20 clients follow the same kind of run through a bare
`tail -f`-style SSE handler on the raw file; rounds alternate so both see the same load.
Each line carries the time it was printed; a client records, per message, the age of its
oldest line (an upper bound for every line in it).
Then: time to serve the finished run's page (100,000 lines) and raw log, against a bare
aiohttp FileResponse of the same file. Goal: p99 delay < 1 s; the page in < 1 s.
With `--postgresql`, the store is a throwaway PostgreSQL cluster and logs are in the database;
the baseline then polls the chunks table every 50 ms, and the file served is the log's text.

    .venv/bin/python -m bench.logs [--lines 100000] [--clients 20] [--rounds 3] [--postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.servers import cpu_seconds
from core.links import Links

KEY = b"bench-signing-key-0123456789abcdef"

JOB = """
import os, sys, time
gate, count = os.environ["GATE"], int(os.environ["LINES"])
while not os.path.exists(gate):
    time.sleep(0.01)
out = sys.stdout
for i in range(count):
    out.write("%.6f %d\\n" % (time.time(), i))
    out.flush()
"""


# -- the server (child process) ------------------------------------------------------------

async def serve(data: Path, port: int, database: str | None) -> None:
    from core.logs import FileLogs
    from core.policy import Actor
    from core.store import Store
    from tests.support.apps import python_job, service_for
    from web import routes

    store = Store(database or f"sqlite:///{data / 'jobbot.db'}")
    store.migrate()
    service = service_for(data, store, [python_job("printer", JOB, env={"GATE": "", "LINES": ""})])
    logs = service.log_store
    links = Links("http://127.0.0.1", KEY)
    app = web.Application()
    routes.setup(app, service, links)

    async def trigger(request: web.Request) -> web.Response:
        body = await request.json()
        result = await service.trigger("printer", Actor.cli("bench"),
                                       overrides={"GATE": body["gate"], "LINES": body["lines"]})
        run_id = result.run.id
        return web.json_response({"id": run_id, "t": links.token(run_id)})

    async def wait(request: web.Request) -> web.Response:
        run = await service.wait(request.match_info["id"])
        return web.json_response({"state": run.state})

    async def bare_file(request: web.Request) -> web.FileResponse:
        run_id = request.match_info["id"]
        if isinstance(logs, FileLogs):
            return web.FileResponse(logs.path(run_id, 1))
        path = data / f"{run_id}.log"
        if not path.exists():
            path.write_bytes(b"".join(logs.read_text(run_id, 1)))
        return web.FileResponse(path)

    async def bare_sse(request: web.Request) -> web.StreamResponse:
        """The baseline: poll the file (or the chunks table) every 50 ms and send what is new,
        nothing else."""
        run_id = request.match_info["id"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": hello\n\n")
        async for data in bare_reads(run_id):
            body = b"".join(b"data: " + line + b"\n" for line in data.splitlines())
            await response.write(body + b"\n")
        await response.write(b"event: end\ndata: {}\n\n")
        return response

    async def bare_reads(run_id: str) -> AsyncIterator[bytes]:
        idle = 0
        if isinstance(logs, FileLogs):
            path = logs.path(run_id, 1)
            while not path.exists():  # noqa: ASYNC110  (the bare baseline polls, on purpose)
                await asyncio.sleep(0.05)
            with open(path, "rb") as handle:  # noqa: ASYNC230  (the bare baseline, on purpose)
                while idle < 40:
                    data = handle.read(1 << 20)
                    if data:
                        idle = 0
                        yield data
                    else:
                        idle += 1
                        await asyncio.sleep(0.05)
            return
        seq = 0
        while idle < 40:
            rows = await asyncio.to_thread(store.log_chunks_after, run_id, 1, seq)
            if rows:
                idle, seq = 0, rows[-1].seq
                yield b"".join(row.text for row in rows)
            else:
                idle += 1
                await asyncio.sleep(0.05)

    app.router.add_post("/bench/trigger", trigger)
    app.router.add_get("/bench/wait/{id}", wait)
    app.router.add_get("/bench/file/{id}", bare_file)
    app.router.add_get("/bench/tail/{id}", bare_sse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- the clients (parent process) ----------------------------------------------------------

async def follow(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                 connected: asyncio.Event, delays: list[tuple[float, int]], jobbot: bool) -> int:
    """Read one event stream to its end; returns the lines received.

    Parsed with byte searches, not JSON, so that 20 clients in one process keep up.
    jobbot: `data: [[1, 7, "<time> 6"], [1, 8, ...]]`; the baseline: one `data: ` per line.
    """
    received = 0
    buffer = b""
    async with session.get(url, headers=headers) as response:
        assert response.status == 200, response.status
        async for chunk in response.content.iter_any():
            connected.set()
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            now = time.time()
            for event in events:
                if event.startswith(b"event: end"):
                    return received
                if jobbot:
                    start = event.find(b"data: [[")
                    if start < 0:
                        continue
                    start = event.index(b'"', start) + 1
                    lines = event.count(b'"], [') + 1
                else:
                    start = event.find(b"data: ")
                    if start < 0:
                        continue
                    start += len(b"data: ")
                    lines = event.count(b"data: ")
                stamp = float(event[start:event.index(b" ", start)])
                delays.append((now - stamp, lines))
                received += lines
    return received


def percentile(weighted: list[tuple[float, int]], q: float) -> float:
    ordered = sorted(weighted)
    total = sum(n for _, n in ordered)
    seen = 0
    for value, n in ordered:
        seen += n
        if seen >= q * total:
            return value
    return ordered[-1][0] if ordered else float("nan")


@dataclass
class Round:
    delays: list[tuple[float, int]]
    cpu: float
    wall: float


async def round_(session: aiohttp.ClientSession, base: str, pid: int, data: Path, label: str,
                 lines: int, clients: int, jobbot: bool) -> tuple[str, Round]:
    """Follow one run with `clients` streams; print delays and server CPU; returns its id."""
    gate = data / f"gate-{label.replace(' ', '-')}"
    async with session.post(f"{base}/bench/trigger",
                            json={"gate": str(gate), "lines": str(lines)}) as response:
        run = await response.json()
    if jobbot:
        url = f"{base}/runs/{run['id']}/logs?t={run['t']}&from=1:0"
        headers = {"Accept": "text/event-stream"}
    else:
        url, headers = f"{base}/bench/tail/{run['id']}", {}
    delays: list[tuple[float, int]] = []
    connected = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(follow(session, url, headers, c, delays, jobbot))
             for c in connected]
    await asyncio.gather(*(c.wait() for c in connected))
    cpu0, wall0, mine0 = cpu_seconds(pid), time.monotonic(), time.process_time()
    gate.touch()
    counts = await asyncio.gather(*tasks)
    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - wall0
    clients_cpu = time.process_time() - mine0
    async with session.get(f"{base}/bench/wait/{run['id']}") as response:
        state = (await response.json())["state"]
    complete = all(c == lines for c in counts)
    p50, p99 = percentile(delays, 0.5), percentile(delays, 0.99)
    print(f"  {label:<28} delay p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
          f"max {max(d for d, _ in delays) * 1000:7.1f} ms   server CPU {cpu:5.2f} s over "
          f"{wall:5.2f} s ({cpu / wall * 100:3.0f}%), clients' CPU {clients_cpu:5.2f} s   "
          f"run {state}, "
          f"{'all lines at every client' if complete else f'LINES MISSING: {counts}'}")
    return str(run["id"]), Round(delays, cpu, wall)


def pooled(label: str, rounds: list[Round]) -> float:
    """Print the delays of all rounds together; returns their p99."""
    delays = [d for r in rounds for d in r.delays]
    p50, p99 = percentile(delays, 0.5), percentile(delays, 0.99)
    worst = max(percentile(r.delays, 0.99) for r in rounds)
    cpu = statistics.median(r.cpu for r in rounds)
    print(f"  {label:<28} delay p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
          f"(worst round's p99 {worst * 1000:7.1f} ms)   median server CPU {cpu:5.2f} s")
    return p99


async def timed_get(session: aiohttp.ClientSession, url: str, repeat: int) -> tuple[float, int]:
    times = []
    size = 0
    for _ in range(repeat):
        start = time.perf_counter()
        async with session.get(url) as response:
            assert response.status == 200, (url, response.status)
            size = 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
        times.append(time.perf_counter() - start)
    return statistics.median(times), size


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def measure(lines: int, clients: int, repeat: int, rounds: int,
                  postgresql: bool) -> None:
    from tests.support.postgres import Cluster

    cluster = Cluster() if postgresql else None
    try:
        database = cluster.start() if cluster else None
        await _measure(lines, clients, repeat, rounds, database)
    finally:
        if cluster is not None:
            cluster.stop()


async def _measure(lines: int, clients: int, repeat: int, rounds: int,
                   database: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="jobbot-bench-logs-") as tmp:
        data = Path(tmp)
        from tests.support.pages import free_port

        port = free_port()
        store = ["--database", database] if database else []
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.logs", "--serve", str(data), "--port", str(port),
            *store, stdout=asyncio.subprocess.PIPE)
        assert server.stdout is not None
        await server.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        try:
            timeout = aiohttp.ClientTimeout(total=None)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                print(f"live log of a run printing {lines} lines, {clients} followers, "
                      f"logs in {'PostgreSQL' if database else 'files'}, {rounds} rounds "
                      f"(jobbot and baseline alternating); load average "
                      f"{load_average()}")
                ours: list[Round] = []
                bare: list[Round] = []
                run_id = ""
                for number in range(1, rounds + 1):
                    run_id, measured = await round_(session, base, server.pid, data,
                                                    f"jobbot SSE {number}", lines, clients, True)
                    ours.append(measured)
                    bare.append((await round_(session, base, server.pid, data,
                                              f"baseline bare tail SSE {number}", lines,
                                              clients, False))[1])
                print(f"all rounds; load average {load_average()}")
                p99 = pooled("jobbot SSE", ours)
                bare_p99 = pooled("baseline bare tail SSE", bare)
                print(f"  p99 ratio jobbot / baseline {p99 / bare_p99:5.2f}x; goal p99 < 1 s: "
                      f"{'met' if p99 < 1 else 'NOT met'}")
                print(f"finished run with {lines} lines (median of {repeat})")
                token = Links("http://127.0.0.1", KEY).token(run_id)
                page, page_size = await timed_get(session, f"{base}/runs/{run_id}?t={token}",
                                                  repeat)
                raw, raw_size = await timed_get(session, f"{base}/runs/{run_id}/logs?t={token}",
                                                repeat)
                file, file_size = await timed_get(session, f"{base}/bench/file/{run_id}", repeat)
                print(f"  run page (HTML)              {page * 1000:7.1f} ms  "
                      f"{page_size / 1e6:5.1f} MB  ratio {page / file:5.1f}x")
                print(f"  raw log download             {raw * 1000:7.1f} ms  "
                      f"{raw_size / 1e6:5.1f} MB  ratio {raw / file:5.1f}x")
                print(f"  baseline bare FileResponse   {file * 1000:7.1f} ms  "
                      f"{file_size / 1e6:5.1f} MB")
        finally:
            server.terminate()
            await server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--postgresql", action="store_true",
                        help="store runs and logs in a throwaway PostgreSQL cluster")
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.port, args.database))
    else:
        asyncio.run(measure(args.lines, args.clients, args.repeat, args.rounds,
                            args.postgresql))


if __name__ == "__main__":
    main()
