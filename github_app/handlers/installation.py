"""installation, installation_repositories and ping: which repositories jobbot serves."""

from __future__ import annotations

from typing import Any

from github_app.context import Context
from github_app.routing import Delivery, Router

router = Router()


def _names(repositories: Any) -> list[str]:
    if not isinstance(repositories, list):
        return []
    return [str(r["full_name"]) for r in repositories
            if isinstance(r, dict) and isinstance(r.get("full_name"), str)]


@router.register("ping")
async def on_ping(delivery: Delivery, ctx: Context) -> str:
    return "pong"


@router.register("installation", "created", "new_permissions_accepted", "unsuspend")
async def on_installed(delivery: Delivery, ctx: Context) -> str:
    names = _names(delivery.get("repositories"))
    await ctx.db(ctx.service.store.add_repositories, delivery.installation_id, names)
    return f"serving {len(names)} repositories"


@router.register("installation", "deleted", "suspend")
async def on_removed(delivery: Delivery, ctx: Context) -> str:
    await ctx.db(ctx.service.store.remove_repositories,
                 installation_id=delivery.installation_id)
    return "installation removed"


@router.register("installation_repositories", "added", "removed")
async def on_repositories(delivery: Delivery, ctx: Context) -> str:
    added = _names(delivery.get("repositories_added"))
    removed = _names(delivery.get("repositories_removed"))
    if added:
        await ctx.db(ctx.service.store.add_repositories, delivery.installation_id, added)
    if removed:
        await ctx.db(ctx.service.store.remove_repositories, removed)
    return f"added {len(added)}, removed {len(removed)}"
