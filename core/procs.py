"""Identify processes across restarts (pid plus start time), so a reused pid is never mistaken."""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Field 22 of /proc/PID/stat (starttime); fields[0] here is field 3 (state).
    return int(fields[19])


@dataclass(frozen=True)
class ProcessId:
    """A process on a host, written as host:pid:start-ticks."""

    host: str
    pid: int
    start: int

    @classmethod
    def current(cls) -> ProcessId:
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> ProcessId:
        return cls(socket.gethostname(), pid, _start_ticks(pid) or 0)

    @classmethod
    def parse(cls, text: str) -> ProcessId | None:
        try:
            host, pid, start = text.rsplit(":", 2)
            return cls(host, int(pid), int(start))
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}"

    @property
    def is_local(self) -> bool:
        return self.host == socket.gethostname()

    def is_alive(self) -> bool:
        """True if this exact process still runs here (False for other hosts: unknowable)."""
        if not self.is_local:
            return False
        ticks = _start_ticks(self.pid)
        if ticks is None or ticks != self.start:
            return False
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    def kill_group(self, sig: signal.Signals = signal.SIGKILL) -> bool:
        """Signal the process group this process leads, if it is still the same process."""
        if not self.is_alive():
            return False
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True
