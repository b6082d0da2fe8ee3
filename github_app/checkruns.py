"""Check runs from run events (the outbox): queued -> in_progress -> completed, one per run."""

from __future__ import annotations

import logging
from typing import Any

from core.errors import NotFound
from core.masking import Masker, is_sensitive_key
from core.models import Run, RunEvent, RunState, Source
from core.spec import JobSpec
from github_app import render
from github_app.context import Context

logger = logging.getLogger(__name__)
LOG_TAIL_LINES = 60


class CheckRunReporter:
    """Outbox subscriber "github": keeps each GitHub-started run's check run and PR comment
    up to date. Rate limits surface as TemporaryFailure, so the outbox waits and retries."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def __call__(self, event: RunEvent) -> None:
        if event.kind not in ("created", "state", "approval"):
            return
        try:
            run = await self.ctx.service.get_run(event.run_id)
        except NotFound:
            return
        origin = run.origin
        if (run.source != Source.GITHUB.value or not run.sha
                or not isinstance(origin.get("repository"), str)
                or not isinstance(origin.get("installation_id"), int)):
            return
        repository: str = origin["repository"]
        api = self.ctx.clients.installation(origin["installation_id"])
        state = RunState(event.state)
        check_run_id = origin.get("check_run_id")
        if not isinstance(check_run_id, int):
            fields = {"name": render.check_name(run), "head_sha": run.sha,
                      "external_id": run.id, "details_url": self.ctx.links.run_url(run.id),
                      "status": "queued"}
            check_run_id = await api.create_check_run(repository, fields)
            await self.ctx.db(self.ctx.service.store.update_run, run.id,
                              origin={**origin, "check_run_id": check_run_id})
        if state is RunState.NEEDS_APPROVAL:
            approvals = await self.ctx.service.approvals(run.id)
            job = self._job(run)
            required = job.approval.required if job is not None and job.approval else 1
            await api.update_check_run(repository, check_run_id, {
                "status": "queued", "output": render.waiting_output(
                    [a.display for a in approvals if a.decision == "approved"], required)})
        elif state is RunState.RUNNING:
            await api.update_check_run(repository, check_run_id, {"status": "in_progress"})
        elif state.is_final:
            await api.update_check_run(repository, check_run_id, await self._completed(run))
        if isinstance(origin.get("pull_request"), int) and event.kind == "state":
            await self.ctx.refresh_pr_comment(api, repository, origin["pull_request"])

    def _job(self, run: Run) -> JobSpec | None:
        try:
            return self.ctx.service.catalog.resolve(f"{run.app}/{run.job}").job
        except NotFound:
            return None

    async def _completed(self, run: Run) -> dict[str, Any]:
        masker = Masker(v for k, v in run.overrides.items() if is_sensitive_key(k))
        fields: dict[str, Any] = {
            "status": "completed",
            "conclusion": render.CONCLUSIONS.get(run.run_state, "neutral"),
            "output": render.check_output(run, await self._log_tail(run), masker),
        }
        if run.run_state is not RunState.SUCCEEDED:
            fields["actions"] = [{"label": "Re-run", "identifier": "rerun",
                                  "description": "Run this job again"}]
        return fields

    async def _log_tail(self, run: Run) -> list[str]:
        attempts = await self.ctx.db(self.ctx.service.store.attempts, run.id)
        if not attempts:
            return []
        last = max(a.index for a in attempts)
        return await self.ctx.db(self.ctx.service.log_store.tail, run.id, last, LOG_TAIL_LINES)
