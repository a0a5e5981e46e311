"""Takes the README's screenshots (docs/*.png) the way a user sees the app: JupyterLab in real Chromium,
a realistic model (`fast` trained on all of CIFAR-10 in the Train tab, about 0.81), photos made from test
images (tests/photoset.py) classified with their heatmaps, a correction kept, and the Models tab.

    python tools/readme_screenshots.py [--data DIR] [--out docs]

Needs what the end-to-end tests need (.ci/install-browser.sh, the test extra). Takes a few minutes: the
training is real.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "e2e")]

from harness import (  # noqa: E402 (after the path is set)
    APP_CELLS,
    AppPage,
    NotebookServer,
    classify_upload,
    launch_chromium,
    name_before_start,
    select_model,
    start_and_watch,
    wait_app,
    write_notebook,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "cifar10"))
    parser.add_argument("--out", default=str(REPO / "docs"))
    args = parser.parse_args()
    from photoset import make_photo_set
    from playwright.sync_api import sync_playwright

    from jupyter_cifar.engine.data import load_cifar10

    data = load_cifar10(args.data)  # warms the cache the kernels use
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        photos = make_photo_set(data.x_test, data.y_test, 4, seed=21)
        uploads = []
        for i, p in enumerate(photos[:4]):
            path = root / f"photo-{i + 1}.jpg"
            path.write_bytes(p.data)
            uploads.append(path)
        server = NotebookServer("lab", root / "lab", store_uri=str(root / "models"), data_dir=Path(args.data))
        server.work.mkdir(parents=True, exist_ok=True)
        write_notebook(server.work, "app", APP_CELLS)
        server.start()
        try:
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
                context.set_default_timeout(120_000)
                page = AppPage(context.new_page(), Path(args.out), name="readme")
                page.open(server.notebook_url("app"))
                page.wait_notebook()
                page.run_all()
                wait_app(page)
                # The Train tab: fast on all of CIFAR-10, its default recipe, as a job on the server.
                page.select("jc-train-preset", "fast")
                page.page.wait_for_timeout(500)
                name_before_start(page, "fast")
                seen = start_and_watch(page, timeout=900)
                assert seen.status.startswith("finished"), seen.status
                page.wait_text("jc-train-saved", r"^saved as fast:1", timeout=120)
                page.screenshot("train", "jc-app")

                # Classify: four photos (small objects, off-centre), where the model looked, a correction.
                page.tab("Classify")
                page.click(".jc-classify-heatmaps input")
                classify_upload(page, *uploads)
                page.locator("jc-correct-label").first.locator("select").select_option(
                    label=_truth(photos[0])
                )
                page.locator("jc-correct-keep").first.click()
                page.wait_text("jc-correct-status", r"^✓ kept as", timeout=60)
                page.screenshot("classify", "jc-app")

                select_model(page, "fast:1")
                page.wait_text("jc-models-details", re.escape("fast:1"), timeout=60)
                page.screenshot("models", "jc-app")
                browser.close()
        finally:
            server.stop()
    print(f"wrote {args.out}/train.png, classify.png, models.png")


def _truth(photo: object) -> str:
    from jupyter_cifar.engine.data import CLASS_NAMES

    return CLASS_NAMES[photo.label]  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
