"""What an approval is bound to: a stable digest of a job's definition as it was loaded."""

from __future__ import annotations

import hashlib
import json

from core.spec import JobSpec


def spec_digest(job: JobSpec) -> str:
    """SHA-256 of the job's definition as stable JSON: any change to app.yaml that changes
    what the job would run, or who may approve it, changes it."""
    text = json.dumps(job.model_dump(mode="json", by_alias=True), sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
