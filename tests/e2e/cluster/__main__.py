"""`python -m tests.e2e.cluster up`: run a cluster in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .binaries import Binaries
from .cluster import KubeCluster


def _up(workdir: Path) -> int:
    # A previous run's certificates and etcd data would only confuse the new cluster.
    shutil.rmtree(workdir, ignore_errors=True)
    binaries = Binaries.build()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with KubeCluster(binaries, workdir=workdir.resolve()) as cluster:
        (workdir / "cluster.pid").write_text(f"{os.getpid()}\n")
        print(f"cluster up in {cluster.start_seconds:.1f}s", flush=True)
        print(cluster.describe(), flush=True)
        print(f"export KUBECONFIG={cluster.admin_kubeconfig}", flush=True)
        print(f"stop: Ctrl-C, or kill $(cat {workdir / 'cluster.pid'})", flush=True)
        while not stop.wait(1.0):
            cluster.check_alive()
    print("cluster stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.cluster")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a cluster and keep it running until stopped")
    up.add_argument(
        "--workdir",
        type=Path,
        default=Path(".jobbot/e2e-cluster"),
        help="directory for certificates, kubeconfigs, etcd data and logs "
        "(wiped first; default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return _up(args.workdir)


if __name__ == "__main__":
    sys.exit(main())
