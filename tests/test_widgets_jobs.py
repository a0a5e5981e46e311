"""The Train tab with a Jupyter server that runs jobs (issue 14, point 6): a real server process, real job
processes, the panels driven in this process as a kernel drives them (see test_widgets.py).

Two Apps here are two kernels: each talks to the server through its API, as a kernel does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from jupyterserver import JupyterServer
from polling import wait_for

from jupyter_cifar.widgets import App

pytestmark = pytest.mark.slow


@pytest.fixture
def server(jobs_server: JupyterServer) -> JupyterServer:
    return jobs_server


def open_app(server: JupyterServer, cifar10_dir: Path) -> App:
    """``%cifar`` in a kernel of that server: the app finds that the server runs jobs."""
    app = App(store=server.store_url, data=str(cifar10_dir))
    wait_for(lambda: app.train.job_client is not None, 60, "the server's jobs")
    return app


def ended(panel) -> bool:
    return panel.follower is not None and panel.follower.state not in ("queued", "running", "stopping")


def points(curve) -> tuple[list[float], list[float]]:
    return curve.x, curve.y


def test_start_queues_a_job_whose_curves_result_and_model_come_to_the_tab(
    server: JupyterServer, cifar10_dir: Path
) -> None:
    app = open_app(server, cifar10_dir)
    try:
        panel = app.train
        # As a job by default: what it saves as is asked before Start, and there is no Save button.
        assert panel.as_job.value and panel.as_job.layout.display is None
        assert panel.children.index(panel.save_rows[0]) < panel.children.index(panel.buttons)
        assert panel.save_button.layout.display == "none"
        panel.form.preset.value = "tutorial"
        panel.form.epochs.value, panel.form.limit.value = 2, 1000
        panel.save_name.value, panel.save_tags.value = "from-app", "via=app"

        panel.start_button.click()
        panel.start_button.click()  # a double click queues one job
        wait_for(lambda: panel.follower is not None, 30, "the job")
        job_id = panel.follower.id
        wait_for(lambda: ended(panel) and not panel._busy and "saved as" in panel.saved.value, what="the end")
        assert panel.session.jobs().list([])[1] == 1  # one job only

        assert panel.status.value.startswith("finished after 2 epochs in "), panel.status.value
        assert panel.saved.value == "saved as from-app:1 by the job"
        assert panel.session.record.ref == "from-app:1" and panel.session.model is not None
        assert panel.session.record.tags == {"via": "app"}
        assert panel.session.record.metadata["job"] == job_id
        progress = panel.progress
        assert len(progress.loss_train.x) > 20 and len(progress.acc_val.x) == 2  # every batch, both epochs
        assert panel.result_label.value.startswith("test accuracy 0.")
        worst = [c for c in panel.result_box.children if "jc-train-worst" in c._dom_classes]
        assert len(worst) == 1 and len(worst[0].children) == 8  # the pictures came with the event
        [row] = panel.jobs_list.box.children
        assert "finished" in row.state.value and "from-app:1" in row.result.value and row.bar.value == 1.0
        assert "jc-job-selected" in row._dom_classes
        app.models.refresh().join(30)
        assert [r.ref for r in app.models.page.items] == ["from-app:1"]  # the Models tab has it

        # Continue queues a job from the version in hand: the next version of that name, its parent,
        # drawn on from the curve already there.
        panel.form.epochs.value = 1
        panel.save_name.value = ""
        assert not panel.continue_button.disabled and "queues a job" in panel.continue_note.value
        panel.continue_button.click()
        wait_for(lambda: panel.follower.id != job_id, 30, "the second job")
        wait_for(lambda: ended(panel) and "saved as" in panel.saved.value, what="the continued job")
        assert panel.saved.value == "saved as from-app:2 by the job", panel.saved.value
        record = panel.session.record
        assert record.metadata["parent"] == "from-app:1" and len(record.metadata["history"]) == 3
        assert len(panel.progress.acc_val.x) == 3 and panel.progress.acc_val.x[-1] == pytest.approx(3.0)
        assert panel.status.value.startswith("finished after 1 epoch (3 epochs in all)"), panel.status.value
    finally:
        app.close()


def test_a_new_kernel_attaches_to_the_running_job_and_redraws_it_whole(
    server: JupyterServer, cifar10_dir: Path
) -> None:
    first = open_app(server, cifar10_dir)
    second = None
    try:
        panel = first.train
        panel.form.preset.value = "tutorial"
        panel.form.epochs.value, panel.form.limit.value = 30, 2000
        panel.start_button.click()
        progress = panel.progress
        wait_for(lambda: panel.follower is not None and len(progress.acc_val.x) >= 1, what="a first epoch")
        job_id = panel.follower.id

        # The first kernel's app closes (a page closed, a kernel restarted): the job goes on.
        first.close()
        time.sleep(2.5)
        assert first.train.follower.detached
        second = open_app(server, cifar10_dir)
        view = second.train
        wait_for(lambda: view.follower is not None, 30, "the attach")
        assert view.follower.id == job_id and view.session.jobs().get(job_id)["state"] == "running"
        # Its whole history is drawn: every epoch already done, then it goes on live.
        wait_for(lambda: len(view.progress.acc_val.x) >= 2, what="the history and a live epoch")
        assert view.stop_button.disabled is False
        view.stop_button.click()
        wait_for(lambda: ended(view) and "saved as" in view.saved.value, 120, "the stop")
        assert view.status.value.startswith("stopped after "), view.status.value
        assert view.saved.value == f"saved as job-{job_id}:1 by the job"

        # A third kernel attached from the start draws exactly what the live one drew.
        third = App(store=server.store_url, data=str(cifar10_dir))
        try:
            wait_for(lambda: third.train.job_client is not None, 60, "the jobs")
            third.train.show_job(job_id).join(30)
            wait_for(lambda: ended(third.train) and "saved as" in third.train.saved.value, 120, "the replay")
            for curve in ("loss_train", "acc_train", "loss_val", "acc_val"):
                live = points(getattr(view.progress, curve))
                replayed = points(getattr(third.train.progress, curve))
                np.testing.assert_allclose(replayed, live, err_msg=curve)
            assert third.train.status.value == view.status.value

            # A stopped job can be resumed from the list: it is queued again, and attached.
            [row] = third.train.jobs_list.box.children
            assert third.train.jobs_list.rows[job_id].resume_button in row.children
            row.resume_button.click()
            wait_for(lambda: third.train.follower.state in ("queued", "running"), 30, "the resume")
            third.train.stop()
            wait_for(lambda: ended(third.train), 120, "the second stop")
        finally:
            third.close()
    finally:
        first.close()
        if second is not None:
            second.close()
