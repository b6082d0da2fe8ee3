"""The store's GitHub App tables (deliveries, repositories, approvals), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

from core.models import utcnow
from core.store import NewDelivery, NewRun, Store


def _delivery(delivery_id: str, event: str = "ping", payload: str = "{}", *,
              owner: str = "h:1:2", head: tuple[str, str, str] | None = None) -> NewDelivery:
    return NewDelivery(delivery_id, event, None, payload, owner=owner, head=head)


def _everyone_dead(owner: str | None, received_at: datetime) -> bool:
    return True


def test_a_delivery_is_recorded_once_and_kept_until_handled(store: Store) -> None:
    first = _delivery("d1", "push", '{"ref": "refs/heads/main"}')
    assert store.record_delivery(first)
    assert store.record_delivery(_delivery("d2"))
    assert not store.record_delivery(first)  # a redelivery: nothing written
    assert store.unhandled_delivery_count() == 2
    store.finish_delivery("d1", "started deploy #1")
    row = store.delivery("d1")
    assert row is not None
    assert (row.event, row.action, row.outcome, row.owner, row.payload) == (
        "push", None, "started deploy #1", "h:1:2", None)
    assert store.unhandled_delivery_count() == 1


def test_unhandled_deliveries_of_dead_processes_are_taken_over_once(store: Store) -> None:
    store.record_delivery(_delivery("dead-1", owner="h:1:1"))
    store.record_delivery(_delivery("alive", owner="h:2:2"))
    store.record_delivery(_delivery("dead-2", owner="h:1:1"))
    store.record_delivery(_delivery("done", owner="h:1:1"))
    store.finish_delivery("done", "pong")
    taken = store.take_over_deliveries("h:3:3", lambda owner, at: owner == "h:1:1")
    assert [(d.id, d.owner, d.payload) for d in taken] == [
        ("dead-1", "h:3:3", "{}"), ("dead-2", "h:3:3", "{}")]
    # A second process starting at the same moment finds them taken.
    assert store.take_over_deliveries("h:4:4", lambda owner, at: owner == "h:1:1") == []
    assert store.delivery("alive") is not None and store.delivery("alive").owner == "h:2:2"


def test_pruning_forgets_old_handled_deliveries_and_keeps_unhandled_ones(store: Store) -> None:
    store.record_delivery(_delivery("done"))
    store.record_delivery(_delivery("waiting", "push"))
    store.finish_delivery("done", "pong")
    assert store.prune_deliveries(utcnow() - timedelta(days=7)) == 0  # both are recent
    assert store.delivery("done") is not None
    assert store.prune_deliveries(utcnow() + timedelta(minutes=1)) == 1
    assert store.delivery("done") is None
    assert [d.id for d in store.take_over_deliveries("h:9:9", _everyone_dead)] == ["waiting"]


def test_only_a_new_push_moves_its_branch_head(store: Store) -> None:
    def push(delivery_id: str, sha: str) -> NewDelivery:
        return _delivery(delivery_id, "push", head=("acme/a", "main", sha))

    assert store.branch_head("acme/a", "main") is None
    store.record_delivery(push("p1", "1" * 40))
    store.record_delivery(push("p2", "2" * 40))
    assert store.branch_head("acme/a", "main") == "2" * 40
    store.record_delivery(push("p1", "1" * 40))  # a redelivery of the older push
    assert store.branch_head("acme/a", "main") == "2" * 40
    store.record_delivery(push("p3", "3" * 40))
    assert store.branch_head("acme/a", "main") == "3" * 40
    assert store.branch_head("acme/a", "dev") is None


def test_an_app_name_belongs_to_one_repository(store: Store) -> None:
    assert store.save_repository_app("acme/a", "shop", "1" * 40, "app: shop") is None
    assert store.save_repository_app("acme/b", "shop", "2" * 40, "app: shop") == "acme/a"
    assert store.save_repository_app("acme/a", "shop", "3" * 40, "app: shop\n") is None
    [row] = store.repository_apps()
    assert (row.repository, row.app, row.sha, row.app_yaml) == ("acme/a", "shop", "3" * 40,
                                                                "app: shop\n")


def test_the_pull_request_comment_is_kept(store: Store) -> None:
    assert store.pull_request_comment("acme/a", 7) is None
    store.save_pull_request_comment("acme/a", 7, 5001)
    store.save_pull_request_comment("acme/a", 7, 5002)
    assert store.pull_request_comment("acme/a", 7) == 5002
    assert store.pull_request_comment("acme/a", 8) is None


def test_served_repositories_follow_installations(store: Store) -> None:
    store.add_repositories(1, ["acme/a", "acme/b"])
    store.add_repositories(2, ["other/c"])
    store.remove_repositories(["acme/a"])
    assert [r.full_name for r in store.served_repositories()] == ["acme/b", "other/c"]
    store.remove_repositories(installation_id=2)
    assert [(r.full_name, r.installation_id) for r in store.served_repositories()] == [
        ("acme/b", 1)]


def test_approvals_cover_one_sha(store: Store) -> None:
    store.approve_sha("acme/a", "1" * 40, 7, "alice")
    store.approve_sha("acme/a", "1" * 40, 7, "bob")  # a second /ok-to-test changes nothing
    approval = store.approval("acme/a", "1" * 40)
    assert approval is not None
    assert approval.approved_by == "alice"
    assert store.approval("acme/a", "2" * 40) is None


def test_runs_are_found_by_pull_request_and_sha(store: Store) -> None:
    def new(repo: str, pr: int, sha: str) -> NewRun:
        return NewRun(app="demo", job="hello", source="github", actor="github:alice", sha=sha,
                      origin={"repository": repo, "pull_request": pr, "fork": False})

    first = store.create_run(new("acme/a", 7, "1" * 40)).run
    second = store.create_run(new("acme/a", 7, "2" * 40)).run
    store.create_run(new("acme/a", 8, "1" * 40))
    store.create_run(new("acme/b", 7, "1" * 40))
    assert [r.id for r in store.runs_for_pull_request("acme/a", 7)] == [second.id, first.id]
    assert len(store.runs_for_sha("1" * 40)) == 3


def test_the_heads_a_pull_request_had_are_kept_in_order(store: Store) -> None:
    opened, pushed = utcnow() - timedelta(hours=1), utcnow()
    store.record_pull_request_head("acme/a", 7, "2" * 40, pushed)
    store.record_pull_request_head("acme/a", 7, "1" * 40, opened)  # heard of late
    store.record_pull_request_head("acme/a", 7, "1" * 40, opened)  # a replay changes nothing
    store.record_pull_request_head("acme/a", 7, "3" * 40, pushed)  # the same second: after
    store.record_pull_request_head("acme/a", 8, "4" * 40, opened)
    heads = store.pull_request_heads("acme/a", 7)
    assert [(h.sha[0], h.since) for h in heads] == [("1", opened), ("2", pushed), ("3", pushed)]
    assert store.pull_request_heads("acme/b", 7) == []


def test_a_repositorys_app_is_read_by_repository(store: Store) -> None:
    assert store.repository_app("acme/a") is None
    store.save_repository_app("acme/a", "shop", "1" * 40, "app: shop")
    row = store.repository_app("acme/a")
    assert row is not None and (row.app, row.sha) == ("shop", "1" * 40)


def test_served_repositories_become_what_github_lists(store: Store) -> None:
    store.add_repositories(1, ["acme/a", "acme/gone"])
    store.add_repositories(2, ["other/moved"])
    store.replace_served_repositories({1: ["acme/a", "other/moved"], 3: ["new/c"]})
    assert [(r.full_name, r.installation_id) for r in store.served_repositories()] == [
        ("acme/a", 1), ("new/c", 3), ("other/moved", 1)]
    served = store.served_repository("new/c")
    assert served is not None and served.installation_id == 3
    assert store.served_repository("acme/gone") is None
    store.replace_served_repositories({})
    assert store.served_repositories() == []
