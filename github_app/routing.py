"""Deliveries, payload field access that never trusts the payload's shape, and routers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import BadInput

if TYPE_CHECKING:
    from github_app.context import Context


class PayloadError(BadInput):
    """A field jobbot needs is missing or has another type (payloads drift; GHES is older)."""


@dataclass(frozen=True)
class Delivery:
    """One verified webhook delivery."""

    id: str
    event: str
    action: str | None
    payload: dict[str, Any]

    def get(self, *path: str | int) -> Any:
        """The value at `path`, or None if any step is missing or of the wrong type."""
        value: Any = self.payload
        for step in path:
            if isinstance(step, int) and isinstance(value, list) and 0 <= step < len(value):
                value = value[step]
            elif isinstance(step, str) and isinstance(value, dict):
                value = value.get(step)
            else:
                return None
        return value

    def text(self, *path: str | int) -> str:
        value = self.get(*path)
        if not isinstance(value, str):
            raise PayloadError(f"{self.event} payload has no text at {'.'.join(map(str, path))}")
        return value

    def number(self, *path: str | int) -> int:
        value = self.get(*path)
        if not isinstance(value, int) or isinstance(value, bool):
            raise PayloadError(f"{self.event} payload has no number at {'.'.join(map(str, path))}")
        return value

    @property
    def repository(self) -> str:
        return self.text("repository", "full_name")

    @property
    def installation_id(self) -> int:
        return self.number("installation", "id")

    @property
    def sender(self) -> str:
        return self.text("sender", "login")


# A handler does the slow part of a delivery (after the HTTP answer) and says what it did.
Handler = Callable[[Delivery, "Context"], Awaitable[str]]


class Router:
    """Handlers by (event, action); `None` as action matches every action of the event."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str | None], list[Handler]] = {}

    def register(self, event: str, *actions: str) -> Callable[[Handler], Handler]:
        def add(handler: Handler) -> Handler:
            for action in actions or (None,):
                self._routes.setdefault((event, action), []).append(handler)
            return handler

        return add

    def handlers(self, event: str, action: str | None) -> list[Handler]:
        found = list(self._routes.get((event, None), []))
        if action is not None:
            found += self._routes.get((event, action), [])
        return found

    def events(self) -> set[str]:
        """The events some handler takes."""
        return {event for event, _ in self._routes}

    @classmethod
    def merge(cls, *routers: Router) -> Router:
        merged = cls()
        for router in routers:
            for key, handlers in router._routes.items():
                merged._routes.setdefault(key, []).extend(handlers)
        return merged
