"""Run Alembic programmatically, so `jobbot` needs no alembic.ini next to it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

_HERE = Path(__file__).parent


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(_config(engine), revision)


def is_current(conn: Connection) -> bool:
    """True when the database `conn` reads is at the newest migration."""
    heads = set(ScriptDirectory.from_config(_config(conn.engine)).get_heads())
    return set(MigrationContext.configure(conn).get_current_heads()) == heads
