"""The store's GitHub App tables (deliveries, repositories, approvals), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, timedelta

from core.models import utcnow
from core.store import NewDelivery, NewRun, Store


def test_a_delivery_is_recorded_once_and_kept_until_handled(store: Store) -> None:
    first = NewDelivery("d1", "push", None, '{"ref": "refs/heads/main"}', owner="h:1:2")
    assert store.record_deliveries([first, NewDelivery("d2", "ping", None, "{}")]) == {"d1", "d2"}
    assert store.record_deliveries([first, NewDelivery("d3", "ping", None, "{}")]) == {"d3"}
    assert [d.id for d in store.unhandled_deliveries()] == ["d1", "d2", "d3"]
    assert store.record_deliveries([], [("d1", "started deploy #1"), ("d3", "pong")]) == set()
    assert [(d.id, d.payload) for d in store.unhandled_deliveries()] == [("d2", "{}")]
    row = store.delivery("d1")
    assert row is not None
    assert (row.event, row.action, row.outcome, row.owner, row.payload) == (
        "push", None, "started deploy #1", "h:1:2", None)


def test_pruning_forgets_old_handled_deliveries_and_keeps_unhandled_ones(store: Store) -> None:
    store.record_deliveries([NewDelivery("done", "ping", None, "{}"),
                             NewDelivery("waiting", "push", None, "{}")])
    store.record_deliveries([], [("done", "pong")])
    assert store.prune_deliveries(utcnow() - timedelta(days=7)) == 0  # both are recent
    assert store.delivery("done") is not None
    assert store.prune_deliveries(utcnow() + timedelta(minutes=1)) == 1
    assert store.delivery("done") is None
    assert [d.id for d in store.unhandled_deliveries()] == ["waiting"]


def test_only_a_new_push_moves_its_branch_head(store: Store) -> None:
    def push(delivery_id: str, sha: str) -> NewDelivery:
        return NewDelivery(delivery_id, "push", None, "{}", head=("acme/a", "main", sha))

    assert store.branch_head("acme/a", "main") is None
    store.record_deliveries([push("p1", "1" * 40), push("p2", "2" * 40)])
    assert store.branch_head("acme/a", "main") == "2" * 40
    store.record_deliveries([push("p1", "1" * 40)])  # a redelivery of the older push
    assert store.branch_head("acme/a", "main") == "2" * 40
    store.record_deliveries([push("p3", "3" * 40)])
    assert store.branch_head("acme/a", "main") == "3" * 40
    assert store.branch_head("acme/a", "dev") is None


def test_a_push_answered_earlier_but_written_later_leaves_the_head(store: Store) -> None:
    # A dead process's push, taken over at start-up, after a newer push was recorded.
    def push(delivery_id: str, sha: str, minutes_ago: int) -> NewDelivery:
        return NewDelivery(delivery_id, "push", None, "{}", head=("acme/a", "main", sha),
                           received_at=utcnow() - timedelta(minutes=minutes_ago))

    store.record_deliveries([push("newer", "2" * 40, 1)])
    store.record_deliveries([push("older", "1" * 40, 5)])
    assert store.branch_head("acme/a", "main") == "2" * 40
    row = store.delivery("older")
    assert row is not None and utcnow() - row.received_at.replace(tzinfo=UTC) > timedelta(
        minutes=4)  # the time it was answered, not the time its row was written
    store.record_deliveries([push("newest", "3" * 40, 0), push("between", "4" * 40, 3)])
    assert store.branch_head("acme/a", "main") == "3" * 40


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
