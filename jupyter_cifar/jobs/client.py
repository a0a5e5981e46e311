"""Jobs as a script sees them, wherever they are kept: through a Jupyter server's API, or in a store.

:func:`open_jobs` gives the same small client for ``http(s)://`` (the server that runs them) and for a
folder or ``mongodb://`` store (where they are kept: a script on a Dask worker or next to the database
may look at them there). Every method answers with a job's JSON, as the API does.
"""

from __future__ import annotations

import builtins
from typing import Any

from ..store.base import ModelStore
from ..store.remote import RemoteModelStore
from .records import JobSpec, check_job_id
from .store import JobStore, open_job_store


class JobClient:
    """Jobs kept in a store this process opens itself."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self.display = jobs.display

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.jobs.create(JobSpec.from_json(spec)).to_json()

    def get(self, job: str) -> dict[str, Any]:
        return self.jobs.get(check_job_id(job)).to_json()

    def list(
        self, states: builtins.list[str], limit: int = 50, offset: int = 0
    ) -> tuple[builtins.list[dict[str, Any]], int]:
        items, total = self.jobs.list(states, limit, offset)
        return [r.to_json() for r in items], total

    def events(
        self, job: str, after: int = 0, wait: float = 0
    ) -> tuple[builtins.list[dict[str, Any]], int, str]:
        """Events after ``after`` (each with its ``seq``), the last number given, and the job's state."""
        found, state = self.jobs.wait_events(check_job_id(job), after, wait)
        last = found[-1][0] if found else after
        return [{**event, "seq": n} for n, event in found], last, state

    def stop(self, job: str) -> dict[str, Any]:
        return self.jobs.request_stop(check_job_id(job)).to_json()

    def resume(self, job: str) -> dict[str, Any]:
        return self.jobs.resume(check_job_id(job)).to_json()

    def delete(self, job: str) -> dict[str, Any]:
        return self.jobs.delete(check_job_id(job)).to_json()

    def close(self) -> None:
        self.jobs.close()


class RemoteJobClient(JobClient):
    """Jobs of a running Jupyter server, through its API (the kernel token or the server's works)."""

    def __init__(self, store: RemoteModelStore) -> None:
        self.store = store
        self.display = f"jobs of {store.display}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.store._request(method, f"jobs{path}", **kwargs)

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        JobSpec.from_json(spec)  # refuse here what the server would refuse, naming the field
        result: dict[str, Any] = self._call("POST", "", json_body=spec)
        return result

    def get(self, job: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/{check_job_id(job)}")
        return result

    def list(
        self, states: builtins.list[str], limit: int = 50, offset: int = 0
    ) -> tuple[builtins.list[dict[str, Any]], int]:
        params = [("limit", str(limit)), ("offset", str(offset)), *(("state", s) for s in states)]
        page = self._call("GET", "", params=params)
        return builtins.list(page["items"]), int(page["total"])

    def events(
        self, job: str, after: int = 0, wait: float = 0
    ) -> tuple[builtins.list[dict[str, Any]], int, str]:
        params = [("after", str(after)), ("wait", str(int(wait)))]
        page = self._call("GET", f"/{check_job_id(job)}/events", params=params)
        return builtins.list(page["events"]), int(page["last"]), str(page["state"])

    def stop(self, job: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/{check_job_id(job)}/stop")
        return result

    def resume(self, job: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/{check_job_id(job)}/resume")
        return result

    def delete(self, job: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/{check_job_id(job)}")
        return result

    def close(self) -> None:
        self.store.close()


def open_jobs(store: ModelStore) -> JobClient:
    """The client for the jobs of this store: through the API for a server, else in the store itself."""
    if isinstance(store, RemoteModelStore):
        return RemoteJobClient(store)
    return JobClient(open_job_store(store))
