"""The app as a newcomer meets it (issue 19), in real Chromium at 1280x1000: what only a browser shows.

A double click on Start, the live curve's first epoch after a longer run, an error card in Classify,
drag and drop, nothing clipped in any tab, and a download in Voilà (no server route there).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from harness import (
    APP_CELLS,
    APP_OBJECT_CELLS,
    AppPage,
    app_errors,
    classify_upload,
    name_before_start,
    select_model,
    set_training,
    wait_app,
    write_notebook,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WINDOW = {"width": 1280, "height": 1000}

# Every visible element of the app whose own text is wider than its box, every SVG text outside its
# figure, and every dropdown whose chosen option is wider than the dropdown: "tag.class: text".
CLIPPED_JS = """() => {
    const app = document.querySelector('.jc-app');
    const out = [];
    const name = (e) => e.tagName.toLowerCase() + '.' + (e.getAttribute('class') || '').split(' ').join('.');
    const canvas = document.createElement('canvas').getContext('2d');
    for (const e of app.querySelectorAll('*')) {
        const box = e.getBoundingClientRect();
        if (!box.width || !box.height || e.closest('.lm-mod-hidden, [style*="display: none"]')) continue;
        if (e instanceof SVGTextElement) {
            const svg = e.ownerSVGElement.getBoundingClientRect();
            if (e.textContent.trim() && (box.left < svg.left - 1 || box.right > svg.right + 1)) {
                out.push(name(e) + ': ' + e.textContent.trim());
            }
            continue;
        }
        if (e.tagName === 'SELECT' && e.selectedIndex >= 0) {
            const style = getComputedStyle(e);
            canvas.font = style.font;
            const text = e.options[e.selectedIndex].text;
            if (canvas.measureText(text).width > e.clientWidth - 24) out.push(name(e) + ': ' + text);
            continue;
        }
        const own = Array.from(e.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
        if (own && e.clientWidth && e.scrollWidth > e.clientWidth + 1) {
            out.push(name(e) + ': ' + e.textContent.trim().slice(0, 80));
        }
    }
    return out;
}"""


# Every box from the app up to the page that scrolls sideways: a few pixels too wide make a scrollbar.
SCROLLS_JS = """() => {
    const out = [];
    for (let e = document.querySelector('.jc-app'); e && e !== document.body; e = e.parentElement) {
        const s = getComputedStyle(e);
        if (['auto', 'scroll'].includes(s.overflowX) && e.clientWidth && e.scrollWidth > e.clientWidth) {
            out.push(e.className + ': ' + (e.scrollWidth - e.clientWidth) + ' px');
        }
    }
    for (const e of document.querySelectorAll('.jc-app *')) {
        const s = getComputedStyle(e);
        if (['auto', 'scroll'].includes(s.overflowX) && e.clientWidth && e.scrollWidth > e.clientWidth) {
            out.push(e.className + ': ' + (e.scrollWidth - e.clientWidth) + ' px');
        }
    }
    return out;
}"""


def loss_xs(page: AppPage) -> list[float]:
    """The x pixel of every point of the Train tab's live training curve, in drawing order."""
    d = page.page.evaluate(
        "() => { const p = document.querySelector('.jc-train-loss g.curve path.line');"
        " return p ? p.getAttribute('d') : ''; }"
    )
    return [float(x) for x in re.findall(r"[ML]\s*(-?[\d.]+(?:e-?\d+)?)[ ,]", d or "")]


def new_cards(page: AppPage, act: Any) -> list[str]:
    """Do ``act``; the file names of the Classify cards it made, once each has its labels."""
    page.page.evaluate("() => document.querySelectorAll('.jc-classify-item').forEach(e => e.dataset.old = 1)")
    act()
    page.page.wait_for_function(
        """() => {
            const cards = Array.from(document.querySelectorAll('.jc-classify-item'))
                .filter(e => !e.dataset.old);
            return cards.length && cards.every(e => e.querySelectorAll('.jc-classify-label').length === 3);
        }""",
        timeout=60_000,
    )
    return page.page.evaluate(
        """() => Array.from(document.querySelectorAll('.jc-classify-item')).filter(e => !e.dataset.old)
            .map(e => e.querySelector('.jc-classify-file').textContent.trim())"""
    )


def assert_nothing_clipped(page: AppPage, where: str) -> None:
    clipped = page.page.evaluate(CLIPPED_JS)
    assert not clipped, f"{where}: text wider than its box at 1280 px: {clipped}"
    scrolls = page.page.evaluate(SCROLLS_JS)
    assert not scrolls, f"{where}: a sideways scrollbar at 1280 px: {scrolls}"


def test_newcomer_in_lab(
    start_server: Any, app_page: AppPage, embedded_store: str, e2e_data: Path, cat_jpeg: Path, tmp_path: Path
) -> None:
    server = start_server("lab", embedded_store, data_dir=e2e_data)
    write_notebook(server.work, "app", APP_CELLS)
    page = app_page
    page.page.set_viewport_size(WINDOW)
    page.open(server.notebook_url("app"))
    page.wait_notebook()
    page.run_all()
    wait_app(page)
    assert_nothing_clipped(page, "Train, before training")

    # A double click on Start: one training of 5 epochs (470 batches: the curve's buckets merge).
    set_training(page, "tutorial", epochs=5, limit=3000)
    name_before_start(page, "newcomer")  # a job on the server: it saves as this when it ends
    page.locator("jc-train-start").first.dblclick()
    status = page.wait_text("jc-train-status", r"^(finished|stopped|failed)", timeout=300)
    assert status.startswith("finished after 5 epochs"), (status, page.report())
    page.wait_text("jc-train-result", r"test accuracy", timeout=30)
    page.page.wait_for_timeout(500)
    xs = loss_xs(page)
    assert xs == sorted(xs), "two trainings drew into one curve (a zig-zag)"
    first = sum(1 for x in xs if x < xs[0] + (xs[-1] - xs[0]) / 5)
    last = sum(1 for x in xs if x > xs[-1] - (xs[-1] - xs[0]) / 5)
    assert first >= 0.7 * last and first >= 20, (first, last)  # the first epoch kept its points
    page.screenshot("newcomer-train", "jc-app")
    assert_nothing_clipped(page, "Train, with its result")
    saved = page.wait_text("jc-train-saved", r"^saved as newcomer:\d+ by the job", timeout=60)
    assert saved.startswith("saved as newcomer:1"), saved  # one job: the double click queued one
    assert len(page.texts("jc-job")) == 1, page.texts("jc-job")

    # A file that is not an image: its card wraps the whole message, in red, in a red frame.
    junk = tmp_path / "holiday-photo-from-the-beach-2026.png"
    junk.write_text("not an image at all, only some text that a person named .png by mistake\n" * 3)
    good, bad = classify_upload(page, cat_jpeg, junk)
    assert len(good.labels) == 3 and not good.errors, good
    assert bad.errors and "holiday-photo-from-the-beach-2026.png" in bad.errors[0], bad
    card = page.page.evaluate(
        """() => {
            const e = document.querySelector('.jc-classify-error-card .jc-classify-error');
            const s = getComputedStyle(e);
            const frame = getComputedStyle(e.closest('.jc-classify-item')).borderColor;
            const lines = e.offsetHeight / parseFloat(s.lineHeight);
            return {fits: e.scrollWidth <= e.clientWidth + 1, lines, colour: s.color, frame};
        }"""
    )
    assert card["fits"] and card["lines"] > 1.5, card  # wrapped, not cut at "not an image, or a form"
    assert card["colour"] == "rgb(176, 0, 32)" and card["frame"] == "rgb(217, 83, 79)", card
    page.screenshot("newcomer-classify-error", "jc-app")
    assert_nothing_clipped(page, "Classify")

    # A photo dropped on the upload zone is classified like a chosen one.
    assert new_cards(page, lambda: page.drop("jc-upload-zone", cat_jpeg)) == [cat_jpeg.name]
    pasted = new_cards(page, lambda: page.drop("jc-upload-zone", cat_jpeg, event="paste"))
    assert pasted == [cat_jpeg.name]  # pasted: classified like a chosen file

    select_model(page, "newcomer:1")
    page.page.wait_for_timeout(500)
    page.screenshot("newcomer-models", "jc-app")
    assert_nothing_clipped(page, "Models")
    assert not app_errors(page), app_errors(page)
    page.assert_clean(allow_console=())  # bqplot in hidden tabs logged "negative width" errors once


def test_a_download_in_voila_comes_through_the_kernel(
    start_server: Any, app_page: AppPage, embedded_store: str, tmp_path: Path
) -> None:
    from storetools import tiny_model

    from jupyter_cifar.store.local import LocalModelStore

    with LocalModelStore(embedded_store) as store:
        store.save(tiny_model(), "dl")
        with store.open("dl:1") as reader:
            stored = reader.read()
    server = start_server("voila", embedded_store, cells=APP_OBJECT_CELLS, name="app")
    page = app_page
    page.page.set_viewport_size(WINDOW)
    page.open(server.notebook_url("app"))
    wait_app(page)
    select_model(page, "dl:1")
    assert "not served by the Jupyter server" in page.text("jc-models-download")  # says why
    page.click("jc-models-prepare-download")
    link = page.page.locator(".jc-models-download a[download]")
    link.wait_for(state="visible", timeout=60_000)
    with page.page.expect_download(timeout=60_000) as download:
        link.click()
    assert download.value.suggested_filename == "dl-v1.keras"
    assert Path(download.value.path()).read_bytes() == stored
    page.screenshot("voila-download", "jc-app")
    assert_nothing_clipped(page, "Models in Voilà")
    assert not app_errors(page), app_errors(page)
    page.assert_clean(allow_console=())
