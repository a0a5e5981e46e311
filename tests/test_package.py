"""The package is installable, import-light and exposes its public names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("tensorflow", "keras", "ipywidgets", "IPython", "torch", "jax")


def _loaded_after(code: str) -> dict[str, bool]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import jupyter_cifar",
        "import jupyter_cifar; jupyter_cifar.__version__; jupyter_cifar.BadParameter",
        # The command line parses (and lists presets) before anything heavy loads.
        "from jupyter_cifar.cli import build_parser; build_parser().parse_args(['train'])",
        "import jupyter_cifar.engine.images, jupyter_cifar.engine.data, jupyter_cifar.engine.nets",
    ],
)
def test_import_is_light(code: str) -> None:
    loaded = _loaded_after(code)
    assert not any(loaded.values()), f"{code!r} loaded {[m for m, v in loaded.items() if v]}"


def test_public_names_resolve_lazily() -> None:
    import jupyter_cifar

    for name in jupyter_cifar.__all__:
        assert getattr(jupyter_cifar, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_thing"):
        jupyter_cifar.no_such_thing  # noqa: B018


def test_console_script_and_module_and_jupyter_subcommand() -> None:
    bin_dir = Path(sys.executable).parent
    for argv in (
        [str(bin_dir / "jupyter-cifar"), "--version"],
        [sys.executable, "-m", "jupyter_cifar", "--version"],
        [str(bin_dir / "jupyter"), "cifar", "--version"],  # Jupyter's subcommand lookup
    ):
        out = subprocess.run(argv, capture_output=True, text=True)
        assert out.returncode == 0, (argv, out.stderr)
        assert out.stdout.startswith("jupyter_cifar "), argv
