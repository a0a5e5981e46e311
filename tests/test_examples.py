"""The example notebooks, run top to bottom in a real kernel, as a reader would run them.

Each notebook has a cell tagged ``parameters`` holding defaults for real use (10 epochs on all 50,000
images, say). Like papermill, the test inserts a cell after it that sets small values instead; unlike
papermill, it needs nothing but nbclient and nbformat. Where a notebook asks its reader to restart the
kernel (a cell tagged ``restart-kernel``), the test restarts it, so what follows really runs in a fresh
process that only has the store to go on.

The checks read what the notebooks printed, and look behind their back where they can (the MongoDB
documents, the store). The executed copies are written to the test's tmp folder, for reading after a
failure, never over ``examples/``.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from mongod import client as mongo_client
from mongod import free_port
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat import NotebookNode

from jupyter_cifar import CLASS_NAMES
from jupyter_cifar.store import open_store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KERNEL = "jupyter-cifar-examples"
CHANCE = 0.1  # ten classes
# Well above chance for 1,000 test images (its standard deviation there is 0.01), well below what the
# small trainings below reach (0.2 to 0.4).
ABOVE_CHANCE = CHANCE + 0.05


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    """Kernel specs holding one kernel that runs this very interpreter.

    The ``python3`` kernel a venv gets from ipykernel starts ``python`` from PATH: another interpreter,
    without this package, when the tests run as ``.venv/bin/python -m pytest`` in a fresh CI venv.
    """
    from ipykernel.kernelspec import write_kernel_spec

    folder = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(str(folder / KERNEL))  # its argv starts with sys.executable
    return KernelSpecManager(kernel_dirs=[str(folder)])


@pytest.fixture
def env(cifar10_dir: Path) -> dict[str, str]:
    """The kernel's environment: the real data, no Jupyter server (so no server's store either)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_CIFAR_SERVER")}
    environment["JUPYTER_CIFAR_DATA"] = str(cifar10_dir)
    environment.pop("SEED_MONGODB_URI", None)
    return environment


def tags(cell: NotebookNode) -> list[str]:
    return list(cell.metadata.get("tags", []))


def with_parameters(nb: NotebookNode, **values: object) -> None:
    """Insert a cell setting ``values`` after the ``parameters`` cell, as papermill does."""
    index = next(i for i, cell in enumerate(nb.cells) if "parameters" in tags(cell))
    for name in values:  # a renamed parameter must fail here, not be silently ignored
        assert re.search(rf"^{name} = ", nb.cells[index].source, re.M), f"no parameter {name}"
    source = "# Parameters\n" + "".join(f"{name} = {value!r}\n" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)


def run_notebook(
    name: str, workdir: Path, kernels: KernelSpecManager, env: dict[str, str], **parameters: object
) -> NotebookNode:
    """Execute ``examples/<name>`` in ``workdir`` (its working folder), restarting where it says."""
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    if parameters:
        with_parameters(nb, **parameters)
    km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=kernels)
    client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(workdir)}})
    try:
        with client.setup_kernel(env=env, cleanup_kc=True):  # shut the kernel down at the end
            for index, cell in enumerate(nb.cells):
                if "restart-kernel" in tags(cell):
                    run_sync(km.restart_kernel)()
                    client.kc.stop_channels()
                    client.start_new_kernel_client()
                if cell.cell_type == "code":
                    client.execute_cell(cell, index)
        client.set_widgets_metadata()
    finally:
        nbformat.write(nb, workdir / name)
    return nb


def printed(cells: list[NotebookNode]) -> str:
    """What the cells printed and returned, as text."""
    parts = []
    for cell in cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data") and "text/plain" in out.data:
                parts.append(out.data["text/plain"] + "\n")
    return "".join(parts)


def one(pattern: str, text: str) -> re.Match[str]:
    found = list(re.finditer(pattern, text, re.M))
    assert len(found) == 1, f"expected one line matching {pattern!r} in:\n{text}"
    return found[0]


def widgets(nb: NotebookNode) -> dict[str, dict[str, Any]]:
    """The notebook's widget models by id (recorded by nbclient as a frontend would have shown them)."""
    return dict(nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"])


def curve(nb: NotebookNode, label: str) -> tuple[list[float], list[float]]:
    """The x and y of the bqplot line labelled ``label`` (its arrays travel as base64 buffers)."""
    for model in widgets(nb).values():
        if model["model_name"] == "LinesModel" and model["state"]["labels"] == [label]:
            arrays = {
                buffer["path"][0]: np.frombuffer(
                    base64.b64decode(buffer["data"]), model["state"][buffer["path"][0]]["dtype"]
                )
                for buffer in model["buffers"]
            }
            return arrays["x"].tolist(), arrays["y"].tolist()
    raise AssertionError(f"no line labelled {label!r}")


def shown_widget(cell: NotebookNode) -> str:
    views = [
        out.data["application/vnd.jupyter.widget-view+json"]["model_id"]
        for out in cell.outputs
        if "application/vnd.jupyter.widget-view+json" in out.get("data", {})
    ]
    assert len(views) == 1, cell.outputs
    return str(views[0])


def test_the_committed_notebooks_carry_no_outputs() -> None:
    """Outputs are cleared before committing: a reader's first run is theirs, and diffs stay readable."""
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: {cell.source[:60]}"
        parameters = [cell for cell in nb.cells if "parameters" in tags(cell)]
        assert len(parameters) == (0 if path.name.startswith("01-") else 1), path.name  # 01: the app alone


def test_quickstart_shows_the_app_with_its_three_tabs(
    kernels: KernelSpecManager, env: dict[str, str], tmp_path: Path
) -> None:
    env["JUPYTER_CIFAR_STORE"] = str(tmp_path / "store")
    nb = run_notebook("01-quickstart.ipynb", tmp_path, kernels, env)
    state = widgets(nb)
    magic = next(cell for cell in nb.cells if cell.source.strip() == "%cifar")
    app = state[shown_widget(magic)]["state"]
    tabs = [state[child.removeprefix("IPY_MODEL_")] for child in app["children"]]
    tab = next(child["state"] for child in tabs if child["model_name"] == "TabModel")
    assert list(tab["titles"]) == ["Train", "Classify", "Models"]
    assert tab["selected_index"] == 0


@pytest.mark.slow
@pytest.mark.usefixtures("cifar10")  # decoded (and cached for the kernels) once per test session
def test_the_seed_journey_restores_the_same_model_in_a_new_kernel(
    kernels: KernelSpecManager, env: dict[str, str], tmp_path: Path, mongo_uri: str
) -> None:
    env["JUPYTER_CIFAR_STORE"] = mongo_uri  # as under docker compose: the models go to MongoDB
    small = {"EPOCHS": 1, "TRAIN_IMAGES": 5000, "TEST_IMAGES": 1000, "SEED": 1}
    nb = run_notebook("02-the-seed-journey.ipynb", tmp_path, kernels, env, **small)
    restart = next(i for i, cell in enumerate(nb.cells) if "restart-kernel" in tags(cell))
    before, after = printed(nb.cells[:restart]), printed(nb.cells[restart:])

    # Trained, above chance, and saved into MongoDB.
    accuracy = one(r"^finished: test accuracy (0\.\d+) on 1,000 test images$", before)[1]
    assert float(accuracy) > ABOVE_CHANCE
    epoch = one(r"^epoch  1: accuracy (0\.\d+), validation (0\.\d+)", before)
    assert float(epoch[2]) == pytest.approx(float(accuracy), abs=5e-4)  # the last epoch measured it
    one(r"^saved seed-tutorial:1 in <MongoModelStore mongodb://", before)
    with mongo_client(mongo_uri) as mongo:
        records = list(mongo.get_default_database()["model_versions"].find())
    assert [(r["name"], r["version"]) for r in records] == [("seed-tutorial", 1)]

    # The curves were drawn from the history: one point per epoch.
    figure = widgets(nb)[shown_widget(next(c for c in nb.cells if "plt.show()" in c.source))]["state"]
    assert figure["title"] == "Accuracy per epoch" and len(figure["marks"]) == 2
    assert curve(nb, "training") == ([1], pytest.approx([float(epoch[1])], abs=5e-4))
    assert curve(nb, "validation") == ([1], pytest.approx([float(accuracy)], abs=5e-5))

    # The photos: one per class, classified before and, identically, after the restart.
    photo = r"^ +\w+\.jpg: \w+ [01]\.\d{4}, \w+ 0\.\d{4}$"
    photos_before = re.findall(photo, before, re.M)
    assert len(photos_before) == 10
    assert re.findall(photo, after, re.M) == photos_before

    # After the restart (a new process: its execution count starts again), the same accuracy.
    first_after = next(c for c in nb.cells[restart:] if c.cell_type == "code")
    assert first_after.execution_count == 1
    assert "loaded seed-tutorial:1" in after
    assert one(r"^test accuracy (0\.\d+) on 1,000 test images$", after)[1] == accuracy
    assert one(r"^\(recorded when it was saved: (0\.\d+)\)$", after)[1] == accuracy


@pytest.mark.slow
@pytest.mark.usefixtures("cifar10")  # decoded (and cached for the kernels) once per test session
def test_from_python_trains_evaluates_classifies_and_keeps_the_model(
    kernels: KernelSpecManager, env: dict[str, str], tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    env["JUPYTER_CIFAR_STORE"] = str(store_dir)
    nb = run_notebook(
        "03-from-python.ipynb", tmp_path, kernels, env, EPOCHS=1, TRAIN_IMAGES=2000, TEST_IMAGES=1000
    )
    out = printed(nb.cells)

    assert "fast:" in out and "tutorial" in out  # the presets, and the chosen one built
    one(r"^epoch 1: validation accuracy 0\.\d+$", out)
    one(r"^finished in \d+ s", out)
    accuracy = float(one(r"^test accuracy (0\.\d+) on 1,000 test images \(chance: 0\.1\)$", out)[1])
    assert accuracy > ABOVE_CHANCE
    assert float(one(r"^\(the trainer measured (0\.\d+)\)$", out)[1]) == accuracy
    per_class = re.findall(r"^ *(\w+) (0\.\d{3}|1\.000) █*$", out, re.M)
    assert sorted(name for name, _ in per_class) == sorted(CLASS_NAMES)
    one(r"^most often confused: \w+ taken for \w+ \(\d+ times\)$", out)

    # Four images classified (top 3 each), and the text file named with its error.
    one(r"^to-classify/notes\.txt: not an image", out)
    assert len(re.findall(r"^ +test-\d+-\w+\.png: \w+ [01]\.\d\d, \w+ 0\.\d\d, \w+ 0\.\d\d$", out, re.M)) == 4

    # The store, seen from here: the version with its alias, tags and the training's record.
    with open_store(store_dir) as store:
        record = store.resolve("from-python@best")
    assert record.ref == "from-python:1"
    assert record.tags == {"preset": "fast", "reviewed": "yes"}
    assert record.test_accuracy == pytest.approx(accuracy, abs=5e-5)
    assert len(record.metadata["history"]) == 1
    assert (tmp_path / "from-python.keras").stat().st_size > 0
    for how in ("loaded from the store", "exported, opened by plain Keras"):
        difference = float(one(rf"^{how}: same predictions: True \(largest difference (\S+)\)$", out)[1])
        assert difference < 1e-5


@pytest.mark.slow
@pytest.mark.usefixtures("cifar10")  # decoded (and cached for the kernels) once per test session
def test_bring_old_models_imports_the_seed_document_and_measures_it_as_the_seed_did(
    kernels: KernelSpecManager, env: dict[str, str], tmp_path: Path, mongo_uri: str
) -> None:
    store_dir = tmp_path / "store"
    env["JUPYTER_CIFAR_STORE"] = str(store_dir)
    env["SEED_MONGODB_URI"] = mongo_uri
    nb = run_notebook(
        "04-bring-old-models.ipynb",
        tmp_path,
        kernels,
        env,
        EXAMPLE_EPOCHS=1,
        TRAIN_IMAGES=5000,
        TEST_IMAGES=1000,
    )
    out = printed(nb.cells)

    # The seed's shape: one document, the .h5 file's bytes in a field, nothing else.
    with mongo_client(mongo_uri) as mongo:
        documents = list(mongo.get_default_database()["modelos"].find())
    assert len(documents) == 1 and set(documents[0]) == {"_id", "nome", "arquivo"}
    assert documents[0]["arquivo"].startswith(b"\x89HDF\r\n\x1a\n")

    one(r"^imported seed:1$", out)
    assert "skipped" not in out
    one(r"^seed:1 +\S+  mongodb document \S+\.modelos _id=\w+ field arquivo$", out)
    seed_accuracy = float(one(r"^the seed's model: test accuracy (0\.\d+) on 1,000 test images$", out)[1])
    assert seed_accuracy > ABOVE_CHANCE
    one(r"^Rescaling\(1/255\) added in front: the seed divided pixels by 255 itself$", out)
    layers = [
        "Rescaling",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    one("^" + re.escape(repr(layers)) + "$", out)  # the seed's network, flat, behind the division
    final = float(one(r"^seed:1: test accuracy (0\.\d+) on 1,000 test images$", out)[1])
    # The same network, measured by Keras on pixels / 255, then by jupyter_cifar on raw pixels.
    assert final == pytest.approx(seed_accuracy, abs=0.005)

    with open_store(store_dir) as store:
        imported = store.resolve("seed:1")
        assert store.list().total == 1
    assert imported.tags == {"source": "seed"} and imported.test_accuracy is None


def test_bring_old_models_says_clearly_when_no_mongodb_answers(
    kernels: KernelSpecManager, env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    env["JUPYTER_CIFAR_STORE"] = str(tmp_path / "store")
    env["SEED_MONGODB_URI"] = f"mongodb://127.0.0.1:{port}/seed"
    with pytest.raises(CellExecutionError):
        run_notebook("04-bring-old-models.ipynb", tmp_path, kernels, env)
    executed = nbformat.read(tmp_path / "04-bring-old-models.ipynb", as_version=4)
    errors = [out for cell in executed.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert [error.ename for error in errors] == ["ConnectionError"]
    message = errors[0].evalue
    assert message.startswith(f"no MongoDB answers at 127.0.0.1:{port} (ServerSelectionTimeoutError)")
    assert "set SEED_MONGODB_URI" in message
    assert not (tmp_path / "store").exists()  # it stopped before anything was imported
