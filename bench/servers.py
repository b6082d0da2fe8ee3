"""Benchmark servers in child processes (a free port, waiting for /healthz, their CPU time,
stopping them) and the measured rounds against them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the server in `proc` answers GET /healthz; an exit or a timeout raises."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1),
        ):
            return
        time.sleep(0.1)
    raise RuntimeError("server did not come up")


T = TypeVar("T")


def run_round(round_: Coroutine[Any, Any, T]) -> T:
    """asyncio.run for a measured round. This process is the client that takes the times: a
    pass of its own garbage collector inside a round (up to 70 ms seen here) would count as the
    server's latency, so it collects before and pauses the collector meanwhile."""
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(round_)
    finally:
        gc.enable()


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system, every thread) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_all(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every one still running, then wait; one that takes over a minute is killed."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
