"""Notebook 7 and Voilà end to end, in real Chromium: the harness's probe, then the app's smoke path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness import (
    APP_CELLS,
    APP_OBJECT_CELLS,
    PROBE_CELLS,
    AppPage,
    assert_app_clean,
    classify_upload,
    exercise_probe,
    name_before_start,
    run_probe_notebook,
    save_model,
    set_training,
    start_and_watch,
    wait_app,
    wait_points,
    write_notebook,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_harness_probe_notebook7(
    start_server, app_page: AppPage, embedded_store: str, cat_jpeg: Path
) -> None:
    page = app_page
    run_probe_notebook(start_server("notebook", embedded_store), page, cat_jpeg, shot="notebook7-probe")
    assert len(page.kernel_errors) == 1
    assert not page.unexpected_page_errors(), page.page_errors


def test_harness_probe_voila(start_server, app_page: AppPage, embedded_store: str, cat_jpeg: Path) -> None:
    server = start_server("voila", embedded_store, cells=PROBE_CELLS, name="probe")
    page = app_page
    page.open(server.notebook_url("probe"))
    exercise_probe(page, cat_jpeg, shot="voila-probe")
    assert len(page.kernel_errors) == 1
    assert not page.unexpected_page_errors(), page.page_errors


def smoke(page: AppPage, jpeg: Path, shot: str, as_job: bool) -> None:
    """The app renders, a 1-epoch tiny training draws its curve while it runs (a job on the server where
    the server runs them, else in the kernel), it is saved, a JPEG gets its labels."""
    wait_app(page)
    titles = [t.strip() for t in page.texts(".jc-app .lm-TabBar-tab")]
    assert titles == ["Train", "Classify", "Models"], titles
    set_training(page, "tutorial", epochs=1, limit=3000)
    if as_job:
        page.wait_visible("jc-train-as-job")
        name_before_start(page, shot)
    else:  # Voilà on its own: no jupyter_cifar server extension, the kernel trains
        assert page.page.locator(page.sel("jc-train-as-job")).first.is_hidden()
    seen = start_and_watch(page)
    assert seen.status.startswith("finished"), (seen.status, page.report())
    assert len(seen.points_while_running()) >= 3, seen.states
    assert re.match(r"^test accuracy 0\.\d{4}", seen.result), seen.result
    wait_points(page, "jc-train-loss", max(seen.points_while_running()))
    page.screenshot(f"{shot}-train", "jc-app")
    if as_job:
        saved = page.wait_text("jc-train-saved", rf"^saved as {shot}:\d+ by the job", timeout=60)
    else:
        saved = save_model(page, shot)
    assert saved.startswith(f"saved as {shot}:1"), saved
    [item] = classify_upload(page, jpeg)
    assert item.file == jpeg.name and not item.errors, item
    assert len(item.labels) == 3 and all(re.fullmatch(r"[a-z]+ \d{1,3}\.\d%", t) for t in item.labels), item
    page.screenshot(f"{shot}-classify", "jc-app")
    assert_app_clean(page)


def test_app_notebook7(
    start_server, app_page: AppPage, embedded_store: str, e2e_data: Path, cat_jpeg: Path
) -> None:
    server = start_server("notebook", embedded_store, data_dir=e2e_data)
    write_notebook(server.work, "app", APP_CELLS)
    page = app_page
    page.open(server.notebook_url("app"))
    page.wait_notebook()
    page.run_all()
    smoke(page, cat_jpeg, "notebook7", as_job=True)


def test_app_voila(
    start_server, app_page: AppPage, embedded_store: str, e2e_data: Path, cat_jpeg: Path
) -> None:
    server = start_server("voila", embedded_store, data_dir=e2e_data, cells=APP_OBJECT_CELLS, name="app")
    page = app_page
    page.open(server.notebook_url("app"))
    smoke(page, cat_jpeg, "voila", as_job=False)
