"""Training jobs in real Chromium (issue 14, point 6): a job started in JupyterLab outlives a page reload
and a kernel restart, and a Voilà page closed and opened again, and the app attaches to it again: its
curves come back whole from the job's event history, then go on live."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness import (
    APP_OBJECT_CELLS,
    RELOAD_PAGE_ERRORS,
    RUNNING,
    AppPage,
    NotebookServer,
    assert_app_clean,
    open_app,
    set_training,
    wait_app,
    wait_points,
    write_notebook,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LONG = {"preset": "tutorial", "epochs": 80, "limit": 2000}  # minutes: it outlives the reloads (Stop ends it)


def validation_points(page: AppPage) -> int:
    """Points of the accuracy figure's validation line: one per epoch ended."""
    counts = page.curve_points("jc-train-accuracy")
    return counts[1] if len(counts) == 2 else 0


def wait_validation(page: AppPage, minimum: int, timeout: float = 180) -> int:
    page.page.wait_for_function(
        """([sel, n]) => {
            const f = document.querySelector(sel);
            if (!f) return false;
            const paths = f.querySelectorAll('g.curve path.line');
            if (paths.length < 2) return false;
            const d = paths[1].getAttribute('d') || '';
            return (d.match(/[ML]/g) || []).length >= n;
        }""",
        arg=[page.sel("jc-train-accuracy"), minimum],
        timeout=timeout * 1000,
        polling=200,
    )
    return validation_points(page)


def training_points(page: AppPage) -> int:
    counts = page.curve_points("jc-train-loss")
    return counts[0] if counts else 0


def stop_job(page: AppPage) -> str:
    page.click("jc-train-stop")
    return page.wait_text("jc-train-status", r"^stopped after", timeout=120)


def job_rows(page: AppPage) -> list[str]:
    return [t.strip() for t in page.texts("jc-job")]


def test_a_job_survives_a_reload_and_a_kernel_restart_in_lab(
    start_server, app_page: AppPage, embedded_store: str, e2e_data: Path
) -> None:
    server: NotebookServer = start_server("lab", embedded_store, data_dir=e2e_data)
    page = app_page
    open_app(page, server)
    page.wait_visible("jc-train-as-job")  # the server runs jobs: Start queues one there
    assert page.page.locator(f"{page.sel('jc-train-as-job')} input").is_checked()

    set_training(page, LONG["preset"], epochs=LONG["epochs"], limit=LONG["limit"])
    page.click("jc-train-start")
    page.wait_text("jc-train-status", RUNNING, timeout=180)
    before = wait_validation(page, 3)
    trained = training_points(page)
    page.screenshot("jobs-lab-running", "jc-app")
    assert len(job_rows(page)) == 1 and "running" in job_rows(page)[0], job_rows(page)

    # The notebook is saved with the app's output (as Lab's autosave does), the page reloads and the
    # kernel restarts: nothing of the training was in either.
    page.page.keyboard.press("Control+s")
    page.page.wait_for_timeout(1000)
    page.page.reload()
    page.wait_notebook()
    page.restart_kernel()
    page.run_all()
    wait_app(page)
    page.wait_text("jc-train-status", RUNNING, timeout=120)
    back = wait_validation(page, before, timeout=120)  # every epoch that had ended is drawn again
    # Every batch is drawn again, in buckets: at least half as many points as the live curve had
    # (when it had passed 400 points, neighbours merged), never a curve that starts where it re-attached.
    assert training_points(page) >= trained // 2, (training_points(page), trained)
    later = wait_validation(page, back + 2, timeout=180)  # and it goes on growing, live
    assert later >= back + 2
    page.screenshot("jobs-lab-reattached", "jc-app")
    status = stop_job(page)
    assert re.match(r"^stopped after \d+(\.\d+)? epochs", status), status
    page.wait_text("jc-train-saved", r"^saved as job-[0-9a-f]{16}:1 by the job", timeout=60)
    assert len(job_rows(page)) == 1  # one job all along
    assert_app_clean(page, allow_page=RELOAD_PAGE_ERRORS)


def test_a_voila_page_closed_and_opened_again_is_attached_to_its_job(
    start_server, app_page: AppPage, embedded_store: str, e2e_data: Path
) -> None:
    # Voilà as a server extension of the Jupyter server (its /voila/render/ route), where jupyter_cifar's
    # extension runs the jobs; each page of it has a kernel of its own, shut down when the page goes.
    server: NotebookServer = start_server("lab", embedded_store, data_dir=e2e_data)
    write_notebook(server.work, "dashboard", APP_OBJECT_CELLS)
    url = server.url("voila/render/dashboard.ipynb")
    page = app_page
    page.open(url)
    wait_app(page)
    page.wait_visible("jc-train-as-job")
    set_training(page, LONG["preset"], epochs=LONG["epochs"], limit=LONG["limit"])
    page.click("jc-train-start")
    page.wait_text("jc-train-status", RUNNING, timeout=180)
    before = wait_validation(page, 2)

    page.page.goto("about:blank")  # the page is closed: Voilà shuts its kernel down
    page.page.wait_for_timeout(1000)
    page.open(url)
    wait_app(page)
    page.wait_text("jc-train-status", RUNNING, timeout=120)
    back = wait_validation(page, before, timeout=120)
    wait_validation(page, back + 1, timeout=180)
    page.screenshot("jobs-voila-reattached", "jc-app")
    assert len(job_rows(page)) == 1 and "running" in job_rows(page)[0], job_rows(page)
    stop_job(page)
    page.wait_text("jc-train-saved", r"^saved as job-[0-9a-f]{16}:1 by the job", timeout=60)
    assert_app_clean(page, allow_page=RELOAD_PAGE_ERRORS)


def test_a_job_for_minutes_from_the_train_tab(
    start_server, app_page: AppPage, embedded_store: str, e2e_data: Path
) -> None:
    """ "or minutes" in the form: the epochs box goes off, the job trains for that long, its status and
    its row say so, and it finishes (not stopped) with the part of an epoch its time allowed."""
    server: NotebookServer = start_server("lab", embedded_store, data_dir=e2e_data)
    page = app_page
    open_app(page, server)
    page.wait_visible("jc-train-as-job")
    set_training(page, "fast", epochs=2, limit=1000)
    page.fill("jc-train-minutes", 0.5)
    epochs_box = page.page.locator(f"{page.sel('jc-train-epochs')} input")
    epochs_box.wait_for()
    page.page.wait_for_function("e => e.disabled", arg=epochs_box.element_handle(), timeout=10_000)
    page.page.wait_for_timeout(300)  # the value reaches the kernel before Start is pressed
    page.click("jc-train-start")
    page.wait_text("jc-train-status", r"^epoch \d+ · \d+% of 0.5 minutes · batch", timeout=180)
    wait_points(page, "jc-train-loss", 6)  # a curve to look at in the screenshot
    page.screenshot("jobs-lab-minutes", "jc-app")
    assert "fast, 0.5 minutes, 1,000 images" in job_rows(page)[0], job_rows(page)
    status = page.wait_text("jc-train-status", r"^finished after", timeout=180)
    assert re.match(r"^finished after \d+(\.\d+)? epochs", status), status
    page.wait_text("jc-train-saved", r"^saved as fast:1 by the job|^saved as job-[0-9a-f]{16}:1 by the job")
    # Its row says where it ran (its worker's host and machine) to a pointer resting on what it trained.
    where = page.locator("jc-job-what").first.locator("div[title]").get_attribute("title")
    assert where and where.startswith("on ") and " cores" in where, where
    assert_app_clean(page)
