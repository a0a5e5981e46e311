"""REST routes of training jobs, under ``<base_url>jupyter-cifar/api/jobs``.

Authenticated and translated like every route of this API (:class:`~.handlers.CifarHandler`); a job is
JSON as :meth:`~jupyter_cifar.jobs.records.JobRecord.to_json` writes it. ``GET jobs/{id}/events`` is a
long poll: it answers at once when there are events after ``after``, else waits up to ``wait`` seconds
(at most 60) for one, on the event loop (no thread is held while it waits).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import BadParameter, StoreUnavailable
from ..jobs.records import ACTIVE, JobSpec, check_job_id
from ..jobs.store import JobStore
from .handlers import API, CifarHandler, _int_arg

MAX_WAIT = 60.0
POLL = 0.2


class JobsBase(CifarHandler):
    @property
    def jobs(self) -> JobStore:
        jobs: JobStore | None = self.settings.get("jupyter_cifar_jobs")
        if jobs is None:
            raise StoreUnavailable("training jobs need the server's store to be an embedded or MongoDB store")
        return jobs


class JobsHandler(JobsBase):
    @web.authenticated
    @authorized(action="read")
    async def get(self) -> None:
        states = [s for value in self.query("state") for s in value.split(",") if s]
        limit, offset = _int_arg(self, "limit", 50), _int_arg(self, "offset", 0)
        items, total = await self.run(self.jobs.list, states, limit, offset)
        page = {"items": [r.to_json() for r in items], "total": total, "offset": offset, "limit": limit}
        self.send_json(page)

    @web.authenticated
    @authorized(action="write")
    async def post(self) -> None:
        spec = JobSpec.from_json(self.read_json())
        executor = self.settings.get("jupyter_cifar_executor")
        if executor is not None:
            await self.run(executor.check)  # 503 naming the Dask scheduler that cannot be reached
        record = await self.run(self.jobs.create, spec, executor.name if executor is not None else "local")
        self.set_header("Location", f"{self.request.path.rstrip('/')}/{record.id}")
        self.send_json(record.to_json(), 201)


class JobHandler(JobsBase):
    @web.authenticated
    @authorized(action="read")
    async def get(self, job: str) -> None:
        record = await self.run(self.jobs.get, check_job_id(job))
        self.send_json(record.to_json())

    @web.authenticated
    @authorized(action="write")
    async def delete(self, job: str) -> None:
        record = await self.run(self.jobs.delete, check_job_id(job))
        self.send_json(record.to_json())


class JobEventsHandler(JobsBase):
    @web.authenticated
    @authorized(action="read")
    async def get(self, job: str) -> None:
        job = check_job_id(job)
        after = _int_arg(self, "after", 0)
        if after < 0:  # refused before anything is looked up
            raise BadParameter("after", f"must be a number from 0 (got {after})")
        wait = min(max(float(_int_arg(self, "wait", 0)), 0.0), MAX_WAIT)
        deadline = time.monotonic() + wait
        while True:
            # The state first: a job publishes all its events before it ends, so an ended state read
            # before the events means no event can come after them.
            record = await self.run(self.jobs.get, job)
            found = await self.run(self.jobs.events, job, after)
            if found or time.monotonic() >= deadline or record.state not in ACTIVE:
                break
            await asyncio.sleep(POLL)
        last = found[-1][0] if found else after
        events: list[dict[str, Any]] = [{**event, "seq": n} for n, event in found]
        self.send_json({"job": job, "state": record.state, "last": last, "events": events})


class JobStopHandler(JobsBase):
    @web.authenticated
    @authorized(action="write")
    async def post(self, job: str) -> None:
        record = await self.run(self.jobs.request_stop, check_job_id(job))
        self.send_json(record.to_json())


class JobResumeHandler(JobsBase):
    @web.authenticated
    @authorized(action="write")
    async def post(self, job: str) -> None:
        record = await self.run(self.jobs.resume, check_job_id(job))
        self.send_json(record.to_json())


_JOB = r"(?P<job>[^/]+)"


def job_handlers() -> list[tuple[str, type[CifarHandler]]]:
    return [
        (f"{API}/jobs", JobsHandler),
        (f"{API}/jobs/{_JOB}", JobHandler),
        (f"{API}/jobs/{_JOB}/events", JobEventsHandler),
        (f"{API}/jobs/{_JOB}/stop", JobStopHandler),
        (f"{API}/jobs/{_JOB}/resume", JobResumeHandler),
    ]
