"""The Train tab's list of the server's training jobs: running and recent, each with its state, network,
progress, test accuracy and saved model; "Show" attaches the tab's curves and views to one, "Resume"
queues an interrupted, stopped or failed one again from its last checkpoint.

The list is read from the server every few seconds in a background thread while the app is open; each
job keeps its row (widgets are updated in place, so a row does not flicker or lose its focus).
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..jobs.records import RESUMABLE, describe_spec, describe_worker
from .common import NO_MATH, button, text_html

log = logging.getLogger(__name__)

SHOWN = 8  # the newest jobs listed
POLL_SECONDS = 2.0
STATE_COLOURS = {
    "queued": "#6b6b6b",
    "running": "#1f77b4",
    "stopping": "#8a4b00",
    "finished": "#1b7e1b",
    "stopped": "#8a4b00",
    "failed": "#b00020",
    "interrupted": "#b00020",
}


class JobRow(w.HBox):
    """One job: [Show] state · what · progress · accuracy · model [Resume]; where it runs or ran (its
    worker's host and machine) shows to a pointer resting on what it trains."""

    def __init__(self, job: dict[str, Any], on_show: Callable[[str], None], on_resume: Callable[[str], None]):
        super().__init__(layout=w.Layout(align_items="center", width="100%", flex_flow="row wrap"))
        self.id = job["id"]
        self.show_button = button("Show", "jc-job-show", icon="eye", tooltip="show this job's curves here")
        self.show_button.layout.width = "80px"
        self.show_button.on_click(lambda _: on_show(self.id))
        self.state = w.HTML(layout=w.Layout(width="90px"))
        self.state.add_class("jc-job-state")
        self.what = w.HTML(layout=w.Layout(flex="0 1 230px"))
        self.what.add_class("jc-job-what")
        self.bar = w.FloatProgress(0.0, min=0.0, max=1.0, layout=w.Layout(width="120px"))
        self.bar.add_class("jc-job-progress")
        self.percent = w.HTML(layout=w.Layout(width="50px"))
        self.result = w.HTML(layout=w.Layout(flex="1 1 150px"))
        self.result.add_class("jc-job-result")
        self.resume_button = button(
            "Resume", "jc-job-resume", icon="repeat", tooltip="queue it again from its last epoch"
        )
        self.resume_button.layout.width = "90px"
        self.resume_button.on_click(lambda _: on_resume(self.id))
        self.children = [self.show_button, self.state, self.what, self.bar, self.percent, self.result]
        self.add_class("jc-job")
        self.update(job)

    def update(self, job: dict[str, Any]) -> None:
        state = job["state"]
        colour = STATE_COLOURS.get(state, "inherit")
        with self.hold_sync():
            classes = " ".join(NO_MATH)
            self.state.value = f'<b class="{classes}" style="color:{colour}">{html.escape(state)}</b>'
            where = describe_worker(job.get("worker"))  # the CPU (and GPUs) its worker trains on
            self.what.value = text_html(f"{describe_spec(job['spec'])} · {job['id'][:6]}", title=where)
            self.bar.value = float(job.get("progress") or 0.0)
            self.bar.bar_style = {"finished": "success", "failed": "danger", "interrupted": "danger"}.get(
                state, ""
            )
            self.percent.value = text_html(f"{self.bar.value:.0%}")
            result = []
            if job.get("test_accuracy") is not None:
                result.append(f"test accuracy {job['test_accuracy']:.4f}")
            if job.get("model"):
                result.append(f"→ {job['model']}")
            if job.get("error") and state in ("failed", "interrupted"):
                result.append(str(job["error"])[:120])
            if state in ("running", "stopping") and job.get("eta_seconds") is not None:
                result.append(f"ETA {int(job['eta_seconds']) // 60}:{int(job['eta_seconds']) % 60:02d}")
            self.result.value = text_html(" · ".join(result))
        if state in RESUMABLE and self.resume_button not in self.children:
            self.children = [*self.children, self.resume_button]
        elif state not in RESUMABLE and self.resume_button in self.children:
            self.children = [c for c in self.children if c is not self.resume_button]

    def select(self, selected: bool) -> None:
        if selected:
            self.add_class("jc-job-selected")
        else:
            self.remove_class("jc-job-selected")


class JobsList(w.VBox):
    """The newest jobs of the server (see the module's doc)."""

    def __init__(self, on_show: Callable[[str], None], on_resume: Callable[[str], None]) -> None:
        super().__init__(layout=w.Layout(display="none", margin="6px 0"))
        self.on_show, self.on_resume = on_show, on_resume
        self.rows: dict[str, JobRow] = {}
        self.selected: str | None = None
        self.title = w.HTML(
            text_html("Training jobs on the Jupyter server (they go on when this notebook closes)")
        )
        self.title.add_class("jc-jobs-title")
        self.box = w.VBox()
        self.children = [self.title, self.box]
        self.add_class("jc-jobs")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the poll and a click both redraw
        self.jobs: list[dict[str, Any]] = []

    def show(self, jobs: list[dict[str, Any]]) -> None:
        """Draw these jobs (newest first), reusing each job's row."""
        with self._lock:
            self._show(jobs)

    def _show(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs
        rows = []
        for job in jobs:
            row = self.rows.get(job["id"])
            if row is None:
                row = self.rows[job["id"]] = JobRow(job, self.on_show, self.on_resume)
            else:
                row.update(job)
            row.select(job["id"] == self.selected)
            rows.append(row)
        for job_id in set(self.rows) - {job["id"] for job in jobs}:
            self.rows.pop(job_id).close()
        if [r.id for r in rows] != [getattr(c, "id", None) for c in self.box.children]:
            self.box.children = rows
        self.layout.display = None if jobs else "none"

    def select(self, job_id: str | None) -> None:
        with self._lock:
            self.selected = job_id
            for row_id, row in self.rows.items():
                row.select(row_id == job_id)

    def update(self, job: dict[str, Any]) -> None:
        """One job as just read (a stop, a resume): its row now, before the next poll."""
        with self._lock:
            row = self.rows.get(job["id"])
            if row is not None:
                row.update(job)

    def poll(self, client: Any, every: float = POLL_SECONDS) -> threading.Thread:
        """Read the newest jobs every ``every`` seconds until :meth:`close`."""

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    items, _ = client.list([], limit=SHOWN)
                    self.show(items)
                except Exception as e:  # the server restarting: the next poll tries again
                    log.info("listing jobs: %s", e)
                self._stop.wait(every)

        self._thread = threading.Thread(target=loop, name="jupyter-cifar-jobs-list", daemon=True)
        self._thread.start()
        return self._thread

    def newest_active(self) -> dict[str, Any] | None:
        for state in (("running", "stopping"), ("queued",)):
            for job in self.jobs:
                if job["state"] in state:
                    return job
        return None

    def close(self) -> None:
        self._stop.set()
        super().close()
