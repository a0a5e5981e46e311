"""`jupyter cifar` as scripts use it: JSON shapes, exit statuses, one-line errors (real processes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_cifar.engine.precision import machine_text

pytestmark = pytest.mark.slow


def cli(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_cifar", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    assert proc.returncode == status, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert proc.stdout == ""


@pytest.fixture(scope="module")
def trained(cifar10, cifar10_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One small training through the command line; its model file and its JSON."""
    path = tmp_path_factory.mktemp("models") / "tutorial.keras"
    proc = cli(
        "train", "--preset", "tutorial", "--epochs", "2", "--train-limit", "2000",
        "--test-limit", "500", "--seed", "3", "--data", cifar10_dir, "--save", path, "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return path, proc


def test_train_prints_one_json_document(trained) -> None:
    path, proc = trained
    result = json.loads(proc.stdout)  # stdout holds the JSON and nothing else
    assert {"name", "version", "test_accuracy", "epochs", "seconds", "images_per_second"} <= set(result)
    assert result["name"] == str(path) and path.is_file()
    assert result["epochs"] == 2 and result["status"] == "finished" and result["seed"] == 3
    assert result["precision"] == "float32"  # the tutorial's; "auto" would be resolved
    assert 0.2 < result["test_accuracy"] <= 1 and result["images_per_second"] > 0
    # Progress went to stderr: the run's description and one line per epoch.
    assert "training tutorial on 2000 images" in proc.stderr and "seed 3, float32)" in proc.stderr
    assert "epoch 1:" in proc.stderr and "epoch 2:" in proc.stderr
    assert "absl" not in proc.stderr and "Traceback" not in proc.stderr


def test_train_in_the_precision_asked_for(cifar10, cifar10_dir: Path) -> None:
    """--precision overrides the preset's "auto" (which measures this CPU): float32 it is, said so."""
    proc = cli(
        "train", "--preset", "fast", "--epochs", "1", "--train-limit", "1000", "--test-limit", "200",
        "--precision", "float32", "--data", cifar10_dir, "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["precision"] == "float32"
    # where it trained, and how fast's 3x3 convolutions did there (oneDNN's on the large maps at least)
    [start] = [line for line in proc.stderr.splitlines() if line.startswith("training fast on 1000 images")]
    assert start.endswith(f", float32) on {machine_text(result['machine'])}") and "cores" in start
    assert "3x3 convolutions' kernels: oneDNN: block1_conv1" in proc.stderr


def test_the_start_line_names_only_what_the_event_says(capsys) -> None:
    """A resumed job replays the start event it wrote before runs said their precision: none is guessed."""
    from jupyter_cifar.cli_common import Output, ProgressBar

    start = {"type": "start", "preset": "fast", "n_train": 500, "epochs": 2, "batches_per_epoch": 4,
             "batch_size": 128, "seed": 0}  # fmt: skip
    bar = ProgressBar(Output(as_json=True))
    bar.tty = False
    bar.on_event(start)
    bar.on_event({**start, "precision": "mixed_bfloat16", "epochs": 1})
    machine = {"cpu": "EPYC", "features": ["avx2"], "cores": 2}
    bar.on_event({**start, "machine": machine, "kernels": {"block3_conv1": "written out"}})
    assert capsys.readouterr().err.splitlines() == [
        "training fast on 500 images, 2 epochs of 4 batches (batch 128, seed 0)",
        "training fast on 500 images, 1 epoch of 4 batches (batch 128, seed 0, mixed_bfloat16)",
        "training fast on 500 images, 2 epochs of 4 batches (batch 128, seed 0) on EPYC (avx2), 2 cores",
        "3x3 convolutions' kernels: written out: block3_conv1",
    ]


def test_evaluate_json(trained, cifar10_dir: Path) -> None:
    path, train = trained
    proc = cli("evaluate", path, "--data", cifar10_dir, "--test-limit", "500", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"accuracy", "n", "per_class"}
    assert result["n"] == 500 and len(result["per_class"]) == 10
    # The same 500 images the training evaluated on: the same accuracy.
    assert result["accuracy"] == pytest.approx(json.loads(train.stdout)["test_accuracy"], abs=1e-6)


def test_classify_files_and_folders_in_order(trained, cifar10_dir: Path, tmp_path: Path) -> None:
    path, _ = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.jpg", "a.jpg"):
        shutil.copy(cifar10_dir / "test" / "ship" / "0001.jpg", folder / name)
    (folder / ".hidden").write_text("x")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    cat = cifar10_dir / "test" / "cat" / "0000.jpg"
    proc = cli("classify", path, cat, folder, broken, tmp_path / "missing.jpg", "--top", "2", "--json")
    assert proc.returncode == 1, proc.stderr  # some inputs could not be handled
    items = json.loads(proc.stdout)
    assert [Path(i["file"]).name for i in items] == [
        "0000.jpg", "a.jpg", "b.jpg", "broken.png", "missing.jpg",
    ]  # fmt: skip
    assert [i["ok"] for i in items] == [True, True, True, False, False]
    for item in items[:3]:
        assert set(item) == {"file", "ok", "top", "error"} and item["error"] is None
        assert len(item["top"]) == 2 and set(item["top"][0]) == {"label", "probability"}
    assert items[1]["top"] == items[2]["top"]
    assert "broken.png" in items[3]["error"] and "no such file" in items[4]["error"]


def test_classify_all_good_exits_0_with_text(trained, cifar10_dir: Path) -> None:
    path, _ = trained
    proc = cli("classify", path, cifar10_dir / "test" / "frog" / "0002.jpg")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(str(cifar10_dir / "test" / "frog" / "0002.jpg") + ": ")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["train", "--epochs", "0"], ["--epochs", "at least 1"]),
        (["train", "--epochs", "many"], ["--epochs", "many"]),
        (["train", "--epochs", "2", "--minutes", "1"], ["--minutes", "not allowed with", "--epochs"]),
        (["train", "--minutes", "0"], ["--minutes", "0"]),
        (["train", "--preset", "resnet9000"], ["--preset", "resnet9000"]),
        (["train", "--precision", "float8"], ["--precision", "float8"]),
        (["train", "--learning-rate", "-1"], ["--learning-rate"]),
        (["train", "--save", "model.h5"], ["--save", ".keras"]),
        # What the store would refuse is refused before training, not after it.
        (["train", "--save", "m", "--tag", "bad key=1"], ["tag", "bad key"]),
        (["train", "--save", "m", "--notes", "x" * 100_001], ["notes", "at most"]),
        (["finetune", "m", "--photos", "p", "--save", "n", "--epochs", "0"], ["--epochs", "at least 1"]),
        (["jobs", "list", "--limit", "0"], ["--limit", "at least 1"]),
        (["train", "--data", "/no/such/folder"], ["--data", "/no/such/folder"]),
        (["classify", "/no/model.keras", "x.jpg"], ["REF", "/no/model.keras"]),
        (["evaluate", "README.md"], ["REF", "README.md", "not a Keras model"]),
        (["classify"], ["REF"]),
        (["frobnicate"], ["frobnicate"]),
        ([], ["COMMAND"]),
    ],
)
def test_bad_usage_exits_2_naming_the_parameter(args: list[str], words: list[str]) -> None:
    assert_one_line_error(cli(*args), 2, *words)


def test_batch_size_larger_than_the_data(cifar10, cifar10_dir: Path) -> None:
    proc = cli("train", "--data", cifar10_dir, "--train-limit", "100", "--batch-size", "500")
    assert_one_line_error(proc, 2, "--batch-size", "500", "100 training images")


def test_a_broken_data_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    proc = cli("train", "--data", tmp_path)
    assert_one_line_error(proc, 2, "--data", str(tmp_path))


def test_data_folder_from_the_environment(cifar10, cifar10_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("JUPYTER_CIFAR_DATA", str(tmp_path / "nowhere"))
    proc = cli("train", "--epochs", "1")
    assert_one_line_error(proc, 2, "--data", "nowhere")
