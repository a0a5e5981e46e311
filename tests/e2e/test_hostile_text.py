"""In real Chromium: text from other people in the Models tab runs no script and is never typeset.

A version whose note, tags and metadata hold an ``<img onerror>`` and a TeX link is in the store before
JupyterLab starts. Beside the app, a control cell shows the same two strings in a plain ``Label`` and
``HTML`` widget: there the script runs and MathJax typesets, so the page can tell; in the app neither
happens, and the text reads exactly as stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import AppPage, select_model, write_notebook
from storetools import tiny_model_file

from jupyter_cifar.store.local import LocalModelStore

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HOSTILE = '<img src=x onerror="window.jcPwned = 1">'
TEX = "$\\href{https://evil.example}{x^2}$"
CONTROL = f"""\
import ipywidgets as w
control = w.VBox([w.Label({TEX!r}), w.HTML({HOSTILE.replace("jcPwned", "jcControl")!r})])
control.add_class("jc-control")
control"""


def test_hostile_text_in_the_models_tab(start_server, app_page: AppPage, tmp_path: Path) -> None:
    store_dir = tmp_path / "models"
    with LocalModelStore(store_dir) as store:
        store.save_file(
            tiny_model_file(tmp_path / "tiny.keras"),
            "hostile",
            metadata={"saved_by": HOSTILE, "architecture": TEX, "test_accuracy": 0.5},
            tags={"k": HOSTILE, "t": TEX},
            notes=HOSTILE + TEX,
        )
    server = start_server("lab", str(store_dir))
    write_notebook(server.work, "hostile", [CONTROL, "%load_ext jupyter_cifar", "%cifar --tab models"])
    page = app_page
    page.open(server.notebook_url("hostile"))
    page.wait_notebook()
    page.run_all()
    # The control: an unescaped <img onerror> runs and a Label's TeX is typeset, in this very page.
    page.page.wait_for_function(
        "() => window.jcControl === 1 && !!document.querySelector('.jc-control mjx-container')",
        timeout=120_000,
    )
    select_model(page, "hostile:1", timeout=120)
    page.wait_text("jc-models-details", "architecture", timeout=60)
    page.page.wait_for_timeout(1000)  # time for any typesetting or image error to happen

    seen = page.page.evaluate(
        """() => {
            const app = document.querySelector('.jc-app');
            return {
                pwned: window.jcPwned === undefined ? null : window.jcPwned,
                images: app.querySelectorAll('img[src="x"]').length,
                math: app.querySelectorAll('mjx-container, .MathJax').length,
                table: app.querySelector('.jc-models-table').textContent,
                details: app.querySelector('.jc-models-details').textContent,
                notes: app.querySelector('.jc-models textarea').value,
            };
        }"""
    )
    assert seen["pwned"] is None and seen["images"] == 0, seen
    assert seen["math"] == 0, seen
    assert f"k={HOSTILE}, t={TEX}" in seen["table"], json.dumps(seen["table"])
    assert HOSTILE in seen["details"] and TEX in seen["details"], seen["details"]
    assert seen["notes"] == HOSTILE + TEX
    page.assert_clean()
