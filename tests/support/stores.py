"""Store fixtures beside the both-backends `store` of tests/conftest.py (which imports these)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.store import Store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A migrated SQLite store, for tests about something other than the database."""
    store = Store(f"sqlite:///{tmp_path / 'jobbot.db'}")
    store.migrate()
    yield store
    store.close()
