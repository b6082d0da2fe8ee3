"""The store's GitHub App tables (deliveries, repositories, approvals), on SQLite and PostgreSQL."""

from __future__ import annotations

from core.store import NewRun, Store


def test_a_delivery_is_recorded_once(store: Store) -> None:
    assert store.record_delivery("d1", "push", None)
    assert not store.record_delivery("d1", "push", None)
    store.set_delivery_outcome("d1", "started deploy #1")
    row = store.delivery("d1")
    assert row is not None
    assert (row.event, row.action, row.outcome) == ("push", None, "started deploy #1")


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
