"""Your photos in JupyterLab, in real Chromium (issue 17): classify an upload, say it is wrong and keep it
with its right label, see where the model looked, fine-tune on the set (a job on the server), and find
the new version with its before/after figures in the Models tab."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from harness import (
    AppPage,
    assert_app_clean,
    classify_upload,
    open_app,
    select_model,
)
from photoset import make_photo_set

from jupyter_cifar.engine.data import CLASS_NAMES

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def seeded_store(tmp_path: Path, e2e_data: Path, cifar10) -> tuple[str, Path]:
    """An embedded store with ``fast`` trained small (10,000 images, 2 epochs) and 29 photos in
    my-photos, and a 30th photo (a ship) to upload."""
    store = str(tmp_path / "models")
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter_cifar", "train", "--preset", "fast", "--epochs", "2",
         "--train-limit", "10000", "--seed", "1", "--data", str(e2e_data), "--store", store, "--save", "fast",
         "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["version"] == 1
    photos = make_photo_set(cifar10.x_test, cifar10.y_test, 30, seed=11)
    from jupyter_cifar.photos import open_photo_store
    from jupyter_cifar.store import open_store

    with open_store(store) as models, open_photo_store(models) as kept:
        kept.add_many([(p.data, CLASS_NAMES[p.label], f"photo-{i}.jpg") for i, p in enumerate(photos[:29])])
    upload = tmp_path / "my-ship.jpg"
    ship = next(p for p in make_photo_set(cifar10.x_test, cifar10.y_test, 40, seed=12) if p.label == 8)
    upload.write_bytes(ship.data)
    return store, upload


def image_src(page: AppPage) -> str:
    return str(page.page.evaluate("() => document.querySelector('.jc-classify-item img').src"))


def test_correct_explain_and_fine_tune_in_lab(
    start_server, app_page: AppPage, seeded_store: tuple[str, Path], e2e_data: Path
) -> None:
    store, upload = seeded_store
    server = start_server("lab", store, data_dir=e2e_data)
    page = app_page
    open_app(page, server)
    select_model(page, "fast:1")
    page.click("jc-models-load")
    page.tab("Classify")
    page.wait_text("jc-classify-model", re.escape("fast:1"), timeout=120)
    page.wait_text("jc-photos-counts", r"^29 photos: ", timeout=60)

    [card] = classify_upload(page, upload)
    assert card.file == "my-ship.jpg" and card.labels, card
    said = card.labels[0].rsplit(" ", 1)[0]
    # "wrong? it is [ship] keep": the answer and its confidence stay in view beside the choice.
    page.select("jc-correct-label", "ship")
    page.click("jc-correct-keep")
    verdict = "" if said == "ship" else re.escape(f" (it said {said})")
    page.wait_text("jc-correct-status", rf"^✓ kept as ship{verdict}$", timeout=60)
    page.wait_text("jc-photos-counts", r"^30 photos: ", timeout=60)
    assert page.text("jc-classify-label").strip() == card.labels[0]

    plain = image_src(page)
    page.click(".jc-classify-heatmaps input")
    page.page.wait_for_function(
        "(before) => { const i = document.querySelector('.jc-classify-item img');"
        " return i && i.src !== before; }",
        arg=plain,
        timeout=120_000,
    )
    page.wait_text("jc-correct-status", r"^✓ kept as ship", timeout=60)  # the choice kept
    page.screenshot("lab-photos-classify", "jc-app")

    page.fill("jc-photos-epochs", 1)
    assert page.input_value("jc-photos-save-as") == "fast-photos"
    page.click("jc-photos-finetune")
    status = page.wait_text("jc-photos-status", r"^saved fast-photos:1 \(from fast:1\)", timeout=600)
    figures = re.search(r"held-out photos ([\d.]+)% → ([\d.]+)%, CIFAR-10 test ([\d.]+)% → ([\d.]+)%", status)
    assert figures, status
    page.wait_text("jc-classify-model", re.escape("fast-photos:1"), timeout=120)  # it came into hand

    select_model(page, "fast-photos:1")
    details = page.text("jc-models-details")
    assert "photos: before → after" in details and "negative flips" in details and "fast:1" in details, (
        details
    )
    before_after = [float(x) for x in figures.groups()]
    assert all(0 <= x <= 100 for x in before_after) and np.isfinite(before_after).all()
    page.screenshot("lab-photos-models", "jc-app")
    assert_app_clean(page)
