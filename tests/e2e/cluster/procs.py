"""Start the cluster's component processes and make sure none of them outlives us."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# Loaded here, not in the forked child, where loading a library is not safe.
_LIBC = ctypes.CDLL(None, use_errno=True)


class ComponentError(RuntimeError):
    """A component failed to start or died; the message carries the tail of its log."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. If the Python process is SIGKILLed (no
    # atexit, no finalizer) the kernel still kills the component: nothing outlives a run.
    # The signal follows the thread that started the component, so start clusters from
    # a thread that lives as long as they do (the main thread in pytest and the CLI).
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log file {path})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Component:
    """One running component: its process and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def check_alive(self) -> None:
        """Raise ComponentError with the log tail if the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise ComponentError(
                f"{self.name} exited with status {code}; last lines of {self.log_path}:\n"
                f"{tail(self.log_path)}"
            )

    def failure(self, what: str) -> ComponentError:
        """An error about this component that shows the end of its log."""
        return ComponentError(
            f"{self.name}: {what}; last lines of {self.log_path}:\n{tail(self.log_path)}"
        )


class Supervisor:
    """Owns the component processes; stop() (also run at exit) ends every one of them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.components: list[Component] = []
        atexit.register(self.stop)

    def start(self, name: str, argv: Sequence[str | os.PathLike[str]]) -> Component:
        """Start argv in its own process group, output appended to <log_dir>/<name>.log."""
        log_path = self.log_dir / f"{name}.log"
        logger.debug("starting %s: %s", name, " ".join(map(str, argv)))
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [os.fspath(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Own group so a Ctrl-C in the terminal reaches us, not the components, and
                # stop() can signal each component with all its children.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        component = Component(name, process, log_path)
        self.components.append(component)
        return component

    def check_alive(self) -> None:
        """Raise ComponentError for the first component that has exited."""
        for component in self.components:
            component.check_alive()

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Terminate components one by one, newest first, SIGKILLing any that lingers.

        One by one because the apiserver shuts down slowly (retrying) once etcd is gone.
        """
        for component in reversed(self.components):
            process = component.process
            if process.poll() is not None:
                continue
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                logger.info(
                    "%s still running %.0fs after SIGTERM; killing it",
                    component.name,
                    grace_seconds,
                )
                _signal_group(process, signal.SIGKILL)
                process.wait()
        self.components.clear()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The group may be gone between poll() and now; that is the outcome we wanted.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
