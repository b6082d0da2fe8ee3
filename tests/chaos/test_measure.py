"""The "followed again" measure of bench/chaos.py, on records made by hand: which runs a killed
replica followed, and when another live replica followed each again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.models import Run
from tests.chaos.checks import Report, takeovers
from tests.chaos.cluster import ChaosCluster, Incarnation
from tests.chaos.kubelet import Pod
from tests.chaos.plan import Plan
from tests.fakes.kubernetes import KubeCall, LogStream

NS = "shop-jobs"


def _life(token: str, started: float, died: float | None) -> Incarnation:
    replica, number = token.split("-")[1], int(token.split("-")[2])
    return Incarnation(replica, number, f"jobbot-{replica}", token, proc=None,  # type: ignore[arg-type]
                       started=started, ready=started, died=died)


def _run(run_id: str, finished: float | None) -> Run:
    return Run(id=run_id, app="shop", job="work", number=1, state="running", source="slack",
               actor="x", finished_at=datetime.fromtimestamp(finished, UTC) if finished else None)


def _call(token: str, at: float, path: str, **query: Any) -> KubeCall:
    return KubeCall("GET", path, dict(query), token, at)


def test_followed_again_is_the_first_sign_of_another_live_replica(tmp_path: Path) -> None:
    cluster = ChaosCluster(Plan(seed=1), tmp_path)
    victim = _life("chaos-a-1", 0, 100)
    other = _life("chaos-b-1", 0, None)
    earlier = _life("chaos-c-1", 0, 50)  # died before: its open stream counts for nothing
    successor = _life("chaos-a-2", 130, None)
    cluster.replicas[0].lives = [victim, successor]
    cluster.replicas[1].lives = [other]
    cluster.replicas[2].lives = [earlier]
    cluster.kills.append((100.0, victim))
    pods = {
        "work-1-a": Pod("work-1-a", NS, "r1", "uid-1", pod="work-1-a-0"),
        "work-2-b": Pod("work-2-b", NS, "r2", "uid-2", pod="work-2-b-0"),
        "work-3-c": Pod("work-3-c", NS, "r3", "uid-3", pod="work-3-c-0"),
        "work-4-d": Pod("work-4-d", NS, "r4", "uid-4", pod="work-4-d-0"),
        "work-5-e": Pod("work-5-e", NS, "r5", "uid-5", pod="work-5-e-0"),
    }
    cluster.kubelet.pods.update(pods)
    jobs = f"/apis/batch/v1/namespaces/{NS}/jobs"
    pods_path = f"/api/v1/namespaces/{NS}/pods"
    # r1: created by the victim; the other replica asks about its pods 4 s after the death.
    cluster.kube.creators[(NS, "work-1-a")] = victim.token
    cluster.kube.calls += [
        _call(other.token, 104, pods_path,
              labelSelector="batch.kubernetes.io/controller-uid=uid-1"),
        _call(other.token, 109, f"{jobs}/work-1-a")]
    # r2: followed by both; the other replica's log stream was open at the death: 0 s.
    cluster.kube.log_streams += [
        LogStream(NS, "work-2-b-0", victim.token, True, opened=90, closed=100),
        LogStream(NS, "work-2-b-0", other.token, True, opened=95, closed=None)]
    # r3: the victim followed it, but it had ended before the death: not counted.
    cluster.kube.calls.append(_call(victim.token, 80, f"{jobs}/work-3-c"))
    # r4: followed by the victim; only a replica already dead held its log, then the victim's
    # own next life reads the log 40 s after the death.
    cluster.kube.calls.append(_call(victim.token, 90, f"{pods_path}/work-4-d-0/log"))
    cluster.kube.log_streams.append(
        LogStream(NS, "work-4-d-0", earlier.token, True, opened=40, closed=None))
    cluster.kube.calls.append(_call(successor.token, 140, f"{pods_path}/work-4-d-0/log"))
    # r5: followed by the victim and never by anyone after it.
    cluster.kube.calls.append(_call(victim.token, 99, f"{jobs}/work-5-e"))
    cluster.kube.calls.sort(key=lambda c: c.at)
    runs = [_run("r1", None), _run("r2", 130), _run("r3", 99), _run("r4", 150),
            _run("r5", None)]

    report = Report("CHAOS_SEED=1")
    takeovers(cluster, runs, report)

    assert sorted(report.takeovers) == [0.0, 4.0, 40.0]
    assert len(report.unfollowed) == 1
    assert "r5" in report.unfollowed[0]


def test_a_run_whose_end_another_replica_records_was_followed_by_then(tmp_path: Path) -> None:
    cluster = ChaosCluster(Plan(seed=1), tmp_path)
    victim = _life("chaos-a-1", 0, 100)
    cluster.replicas[0].lives = [victim]
    cluster.kills.append((100.0, victim))
    cluster.kubelet.pods["work-1-a"] = Pod("work-1-a", NS, "r1", "uid-1", pod="work-1-a-0")
    cluster.kube.creators[(NS, "work-1-a")] = victim.token

    report = Report("CHAOS_SEED=1")
    takeovers(cluster, [_run("r1", 112.5)], report)

    assert report.takeovers == [12.5]
    assert report.unfollowed == []
