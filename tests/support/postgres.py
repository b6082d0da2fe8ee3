"""A throwaway PostgreSQL cluster for the tests: Debian's server, started in a temp directory."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.net import free_port


class PostgresError(RuntimeError):
    """The throwaway PostgreSQL cluster could not be set up."""


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise PostgresError(
            "no PostgreSQL server found (/usr/lib/postgresql/*/bin/initdb): run `make postgres` "
            "or set JOBBOT_TEST_DATABASE_URL"
        )
    return Path(found[-1]).parent


class Cluster:
    """initdb + pg_ctl in a temp dir, trust auth on 127.0.0.1; stop() removes everything."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="jobbot-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        # initdb refuses to run as root: run the server as the postgres user then.
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def start(self) -> str:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "jobbot",
                  "--no-sync", "-E", "UTF8")
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                   f"-c unix_socket_directories={self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                  "-o", options, "-w", "-t", "60", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return f"postgresql://jobbot@127.0.0.1:{self.port}/postgres"
            time.sleep(0.1)
        raise PostgresError(f"PostgreSQL did not listen on {self.port}: see {self.root}/log")

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                (["runuser", "-u", self.user, "--"] if self.user else [])
                + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                capture_output=True, check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)
