"""The Validator's queue of pre-deploy validation jobs: one runs at a time.

``POST /-/validations`` submits a :class:`ValidationRequest`; the Validator's worker
takes jobs in order and runs each off its event loop. Finished jobs are kept, up to
``keep``, so clients can poll ``GET /-/validations/{id}`` for the report.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from rayfleet.platform.errors import NotFound

__all__ = ["Job", "JobQueue", "ValidationRequest"]

Status = Literal["queued", "running", "passed", "failed", "error"]


class ValidationRequest(BaseModel):
    """What to validate: a candidate of a model against a baseline, on a dataset
    (a Parquet URI; the candidate's reference data by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    candidate: str = Field(min_length=1)
    baseline: str = Field(min_length=1)
    data: str | None = None
    batch_size: PositiveInt = 64


@dataclass
class Job:
    """One validation job and, once done, its report."""

    id: str
    request: ValidationRequest
    submitted_at: float
    status: Status = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    rows_done: int = 0
    rows_total: int = 0
    report: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The job as ``GET /-/validations/{id}`` shows it."""
        return {
            "id": self.id,
            "request": self.request.model_dump(),
            "status": self.status,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": {"rows_done": self.rows_done, "rows_total": self.rows_total},
            "report": self.report,
            "error": self.error,
        }


@dataclass
class JobQueue:
    """Jobs in submission order; at most ``keep`` remembered."""

    keep: int = 100
    jobs: OrderedDict[str, Job] = field(default_factory=OrderedDict)
    pending: asyncio.Queue[Job] = field(default_factory=asyncio.Queue)

    def submit(self, request: ValidationRequest) -> Job:
        """Queue ``request``; forget the oldest finished jobs past ``keep``."""
        job = Job(uuid.uuid4().hex[:12], request, time.time())
        self.jobs[job.id] = job
        self.pending.put_nowait(job)
        finished = [j for j in self.jobs.values() if j.finished_at is not None]
        for old in finished[: max(0, len(self.jobs) - self.keep)]:
            del self.jobs[old.id]
        return job

    def get(self, job_id: str) -> Job:
        """The job called ``job_id``; :class:`NotFound` if unknown or forgotten."""
        try:
            return self.jobs[job_id]
        except KeyError:
            raise NotFound(f"no validation job {job_id!r}") from None
