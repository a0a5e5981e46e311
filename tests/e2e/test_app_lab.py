"""JupyterLab 4 end to end, in real Chromium: the harness's own probe, then the app's whole path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness import (
    AppPage,
    NotebookServer,
    assert_app_clean,
    classify_upload,
    exercise_probe,
    name_before_start,
    open_app,
    run_probe_notebook,
    select_model,
    set_training,
    start_and_stop,
    start_and_watch,
    wait_app,
    wait_points,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_harness_probe_lab(start_server, app_page: AppPage, embedded_store: str, cat_jpeg: Path) -> None:
    """The harness itself: widgets by class, a live bqplot curve, an upload, a callback's exception, a
    kernel restart and the cells run again."""
    page = app_page
    run_probe_notebook(start_server("lab", embedded_store), page, cat_jpeg, shot="lab-probe")
    assert len(page.kernel_errors) == 1  # the probe's own

    kernel = page.kernel_id()
    page.restart_kernel()
    assert page.kernel_id() == kernel  # restarted in place
    page.run_all()
    page.page.wait_for_function(
        "() => document.querySelectorAll('.jc-probe-app').length === 1 && "
        "document.querySelector('.jc-probe-status').textContent.trim() === 'waiting'",
        polling="raf",
    )
    exercise_probe(page, cat_jpeg)
    assert [m.content["evalue"] for m in page.kernel_errors] == ["probe boom", "probe boom"]
    assert not page.unexpected_page_errors(), page.page_errors


def test_app_lab(lab_server: NotebookServer, app_page: AppPage, store_uri: str, cat_jpeg: Path) -> None:
    """Train (stop one run, finish another with live curves), save, classify, restart the kernel, find
    the saved version in Models, load it, classify the same file again: the same answer."""
    variant = "mongodb" if store_uri.startswith("mongodb") else "embedded"
    server = lab_server
    page = app_page
    open_app(page, server)
    assert page.text("jc-train-status").strip(), "the Train tab shows no status"
    titles = [t.strip() for t in page.texts(".jc-app .lm-TabBar-tab")]
    assert titles == ["Train", "Classify", "Models"], titles

    # A run stopped while its batches run.
    set_training(page, "tutorial", epochs=2, limit=2000)
    stop_seconds, stopped = start_and_stop(page)
    print(f"'stopped' came {stop_seconds:.1f} s after Stop: {stopped!r}")
    assert stop_seconds < 15, f"'stopped' came {stop_seconds:.1f} s after Stop ({stopped!r})"
    assert_app_clean(page)

    # A run to its end, a job on the server (the default there), saved by the job under the name given
    # before Start: the loss curve grows while it runs, the status moves on.
    name = f"e2e-{variant}"
    name_before_start(page, name)
    seen = start_and_watch(page)
    assert seen.status.startswith("finished"), (seen.status, page.report())
    assert len(seen.points_while_running()) >= 3, seen.states
    assert len(seen.running_statuses()) >= 2, seen.running_statuses()
    print(f"{seen.status!r}; loss-curve point counts seen while running: {seen.points_while_running()}")
    assert re.match(r"^test accuracy 0\.\d{4}", seen.result), seen.result
    wait_points(page, "jc-train-loss", max(seen.points_while_running()))
    wait_points(page, "jc-train-accuracy", 2)
    page.screenshot(f"lab-{variant}-train", "jc-app")

    saved = page.wait_text("jc-train-saved", rf"^saved as {name}:\d+ by the job", timeout=60)
    assert saved.startswith(f"saved as {name}:1"), saved

    [first] = classify_upload(page, cat_jpeg)
    assert first.file == cat_jpeg.name, first
    assert not first.errors and len(first.labels) == 3, first
    assert f"{name}:1" in first.model, first.model  # the saved version is the model in hand
    assert all(re.fullmatch(r"[a-z]+ \d{1,3}\.\d%", t) for t in first.labels), first.labels
    page.screenshot(f"lab-{variant}-classify", "jc-app")
    assert_app_clean(page)

    # A new kernel knows nothing: the saved version comes back from the store.
    page.restart_kernel()
    page.run_all()
    page.page.wait_for_function(
        "() => document.querySelectorAll('.jc-app').length === 1 && "
        "!document.querySelector('.jc-classify-item')",
        polling="raf",
        timeout=120_000,
    )
    wait_app(page)
    select_model(page, f"{name}:1")
    wait_points(page, "jc-models-curves", 2)  # the stored history: 2 epochs
    page.screenshot(f"lab-{variant}-models", "jc-app")
    page.click("jc-models-load")
    page.tab("Classify")
    page.wait_text("jc-classify-model", re.escape(f"{name}:1"), timeout=120)
    [again] = classify_upload(page, cat_jpeg)
    assert again.file == first.file
    assert again.labels == first.labels, (first, again)
    assert_app_clean(page)
