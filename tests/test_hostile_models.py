"""Hostile model files are refused at every entry point: nothing runs, nothing is read (issue 7).

The corpus (``tests/hostile.py``) holds one file per published technique, written from scratch. Each file
goes to ``load_model``, ``inspect_model_file``, the embedded store's ``save_file`` (an upload) and
``save`` (an import), and ``jupyter cifar models import``; each must be refused with a ModelFileError
naming the file and the reason, and its marker must show that the payload neither ran (no marker
created) nor read anything (the marker's access time, set back first, unchanged). Controls at the end
show that the payloads are real: unrefused, they do create or read their marker.

The allocation bombs (a config asking Keras to build far more than the file holds) are refused before
anything is built: the process's peak resident memory rises by less than ``RSS_BOUND`` while each is
refused, where plain Keras allocates hundreds of megabytes for the same file before it fails.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hostile import (
    ALLOCATION_BOMBS,
    BY_NAME,
    CORPUS,
    TRAVERSAL_NAMES,
    Hostile,
    pickle_payload,
    write_benign,
    write_with_entry,
)
from storetools import stored_items
from test_cli import cli

from jupyter_cifar.cli import main as cli_main
from jupyter_cifar.engine import modelcontainers, modelfiles
from jupyter_cifar.engine.modelfiles import inspect_model_file, load_model
from jupyter_cifar.errors import ModelFileError
from jupyter_cifar.store.local import LocalModelStore

REPO = Path(__file__).resolve().parent.parent
READERS = [item for item in CORPUS if item.reads]
RSS_BOUND = 100 << 20  # how far memory may rise while an allocation bomb is refused


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus, built once: ``NAME`` and its marker ``NAME.marker`` for every item."""
    folder = tmp_path_factory.mktemp("hostile")
    for item in CORPUS:
        item.build(folder / item.name, marker(folder, item))
    write_benign(folder / "good.keras")
    return folder


def marker(folder: Path, item: Hostile) -> Path:
    return folder / f"{item.name}.marker"


@contextlib.contextmanager
def nothing_ran_or_read(folder: Path, item: Hostile) -> Iterator[None]:
    """Around an attempt: the marker is not created (code) or not read (its access time is unchanged)."""
    path = marker(folder, item)
    if item.reads:
        before = backdate(path)
    else:
        assert not path.exists()
    yield
    if item.reads:
        assert path.stat().st_atime_ns == before, f"{path} was read"
    else:
        assert not path.exists(), f"the payload of {item.name} ran"


def backdate(path: Path) -> int:
    """Set a file's access time an hour before its modification time; return it.

    With Linux's default relatime (and with strictatime) any read then moves it:
    :func:`test_the_file_read_payloads_are_real` shows that it does on this filesystem.
    """
    info = path.stat()
    os.utime(path, ns=(info.st_mtime_ns - 3600 * 10**9, info.st_mtime_ns))
    return path.stat().st_atime_ns


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalModelStore]:
    """An embedded store that already holds one good model."""
    root = tmp_path_factory.mktemp("store")
    good = root.parent / "good.keras"
    write_benign(good)
    store = LocalModelStore(root / "models")
    store.save_file(good, "good", notes="saved before the attacks")
    yield store
    store.close()


def holdings(store: LocalModelStore) -> dict[str, Any]:
    """What the store holds, down to its files' bytes."""
    page = store.list(limit=1000)
    return {
        "records": [(r.name, r.version, r.sha256, r.notes) for r in page.items],
        "total": page.total,
        "items": stored_items(store),
        "files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in store.files.iterdir()},
    }


ENTRY_POINTS: dict[str, Callable[[Path, LocalModelStore], object]] = {
    "load_model": lambda path, store: load_model(path),
    "inspect_model_file": lambda path, store: inspect_model_file(path),
    "store.save_file": lambda path, store: store.save_file(path, "hostile"),
    "store.save": lambda path, store: store.save(path, "hostile"),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("item", CORPUS, ids=lambda item: item.name)
def test_refused_at_every_entry_point(
    item: Hostile, entry: str, folder: Path, store: LocalModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(modelfiles.EXTRA_LAYERS_ENV, raising=False)
    path = folder / item.name
    held = holdings(store)
    with nothing_ran_or_read(folder, item), pytest.raises(ModelFileError) as refusal:
        ENTRY_POINTS[entry](path, store)
    message = str(refusal.value)
    assert message.startswith(f"{path}: refused: "), message
    assert "\n" not in message
    assert re.search(item.refusal, message), message
    assert holdings(store) == held


@pytest.mark.parametrize("item", CORPUS, ids=lambda item: item.name)
def test_the_command_line_refuses_with_one_line(
    item: Hostile, folder: Path, store: LocalModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    path = folder / item.name
    held = holdings(store)
    with nothing_ran_or_read(folder, item):
        status = cli_main(["models", "import", str(path), "--name", "hostile", "--store", str(store.root)])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""  # a bad PATH is a bad parameter (design: exit status 2)
    assert err.count("\n") == 1 and f"{path}: refused: " in err, err
    assert err.startswith("jupyter cifar models import: error: PATH: ")
    assert holdings(store) == held


def run_python(script: str, *args: object) -> Any:
    """Run ``script`` in a fresh Python process (tests/ on its path); return what it prints, as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, 'tests')\n{script}", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_allocation_bombs_are_refused_before_anything_is_built(folder: Path, tmp_path: Path) -> None:
    """In a fresh process, memory rises by less than RSS_BOUND while each entry point refuses each bomb."""
    script = """
import json, sys
from pathlib import Path
from hostile import PeakRss
from jupyter_cifar.errors import ModelFileError
from jupyter_cifar.engine.modelfiles import inspect_model_file, load_model
from jupyter_cifar.store.local import LocalModelStore
store, folder = LocalModelStore(sys.argv[1]), Path(sys.argv[2])
entries = {"load_model": load_model, "inspect_model_file": inspect_model_file,
           "store.save_file": lambda p: store.save_file(p, "x"), "store.save": lambda p: store.save(p, "x")}
inspect_model_file(folder / "good.keras")  # what checking a file imports on first use
grew = {}
for name in sys.argv[3:]:
    for entry, attempt in entries.items():
        with PeakRss() as rss:
            try:
                attempt(folder / name)
            except ModelFileError:
                pass
            else:
                raise SystemExit(f"{entry} did not refuse {name}")
        grew[f"{entry}({name})"] = rss.grew
print(json.dumps(grew))
"""
    names = [item.name for item in ALLOCATION_BOMBS]
    grew = run_python(script, tmp_path / "store", folder, *names)
    assert len(grew) == 4 * len(names)
    assert max(grew.values()) < RSS_BOUND, {k: f"{v / 2**20:.1f} MiB" for k, v in grew.items()}


@pytest.mark.parametrize("name", ["dense_units.keras", "build_config.keras", "free_tensor.keras"])
def test_the_allocation_bombs_are_real(name: str, folder: Path) -> None:
    """Unchecked, Keras (safe mode on) allocates hundreds of megabytes for them before it fails."""
    script = """
import json, sys
from pathlib import Path
import keras
from hostile import PeakRss
folder = Path(sys.argv[1])
keras.saving.load_model(folder / "good.keras", compile=False)  # Keras' own first-use allocations
error = "it loaded"
with PeakRss() as rss:
    try:
        keras.saving.load_model(folder / sys.argv[2], compile=False, safe_mode=True)
    except ValueError as e:
        error = str(e)
print(json.dumps([rss.grew, error]))
"""
    grew, error = run_python(script, folder, name)
    assert error != "it loaded"
    assert grew > 2 * RSS_BOUND, f"{name}: memory rose by only {grew / 2**20:.0f} MiB ({error[:200]})"


def test_a_real_command_line_process(folder: Path, store: LocalModelStore) -> None:
    """The same through `python -m jupyter_cifar`: exit status 2, one line on stderr, nothing else."""
    item = BY_NAME["lambda.h5"]
    path = folder / item.name
    held = holdings(store)
    with nothing_ran_or_read(folder, item):
        proc = cli("models", "import", path, "--name", "hostile", "--store", store.root)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and f"{path}: refused: " in proc.stderr, proc.stderr
    assert holdings(store) == held


def test_refusals_need_neither_keras_nor_tensorflow(folder: Path, tmp_path: Path) -> None:
    """In a fresh process, every file is refused by every entry point without Keras being imported."""
    script = """
import json, sys
from pathlib import Path
from jupyter_cifar.errors import ModelFileError
from jupyter_cifar.engine.modelfiles import inspect_model_file, load_model
from jupyter_cifar.store.local import LocalModelStore
store = LocalModelStore(sys.argv[1])
entries = [inspect_model_file, load_model, lambda p: store.save_file(p, "x"), lambda p: store.save(p, "x")]
refused = {}
for name in sys.argv[2:]:
    for entry in entries:
        try:
            entry(Path(name))
        except ModelFileError:
            refused[name] = refused.get(name, 0) + 1
print(json.dumps({"refused": refused, "imported": sorted({"keras", "tensorflow"} & set(sys.modules))}))
"""
    paths = [str(folder / item.name) for item in CORPUS]
    for item in READERS:
        backdate(marker(folder, item))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "store"), *paths],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"refused": dict.fromkeys(paths, 4), "imported": []}
    for item in CORPUS:
        path = marker(folder, item)
        assert path.exists() == item.reads
        if item.reads:
            assert path.stat().st_atime_ns < path.stat().st_mtime_ns, f"{path} was read"


@pytest.mark.parametrize("name", TRAVERSAL_NAMES)
def test_every_way_out_of_the_folder_is_refused(name: str, tmp_path: Path) -> None:
    path = tmp_path / "escape.keras"
    write_with_entry(path, name)
    with pytest.raises(ModelFileError, match="has a path that leaves its folder"):
        inspect_model_file(path)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_a_zip64_archive_is_refused_before_its_directory_is_parsed(tmp_path: Path) -> None:
    """A ZIP64 end record (over 65,535 entries or 4 GiB) is no model: refused from the record alone."""
    path = tmp_path / "zip64.keras"
    write_benign(path)
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = b"\xff\xff\xff\xff"  # entries on this disk, in all: "see the ZIP64 record"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"zip64\.keras: refused: a ZIP64 archive"):
        inspect_model_file(path)


def test_the_weight_count_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAX_WEIGHTS counts every dataset's declared numbers (the benign model has 40)."""
    path = tmp_path / "benign.keras"
    write_benign(path)
    inspect_model_file(path)
    monkeypatch.setattr(modelcontainers, "MAX_WEIGHTS", 39)
    with pytest.raises(ModelFileError, match=r"model\.weights\.h5 declares over 39 weights"):
        inspect_model_file(path)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_the_benign_file_the_corpus_starts_from_loads(suffix: str, tmp_path: Path) -> None:
    """The corpus's files are hostile by their payload alone: without it, the same file loads."""
    path = tmp_path / f"benign{suffix}"
    write_benign(path)
    model = load_model(path)
    assert [type(layer).__name__ for layer in model.layers] == ["GlobalMaxPooling2D", "Dense"]
    np.testing.assert_allclose(model.get_weights()[0], np.full((3, 10), 0.5))


def deflated(source: Path, target: Path) -> Path:
    """The same .keras file with its entries compressed (a person re-zipped it; Keras stores them)."""
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            out.writestr(info.filename, z.read(info))
    return target


def test_compressed_entries_are_checked_the_same_way(folder: Path, tmp_path: Path) -> None:
    benign = tmp_path / "benign.keras"
    write_benign(benign)
    assert load_model(deflated(benign, tmp_path / "benign-deflated.keras")).layers[-1].units == 10
    item = BY_NAME["external_dataset.keras"]
    path = deflated(folder / item.name, tmp_path / item.name)
    with nothing_ran_or_read(folder, item), pytest.raises(ModelFileError, match=item.refusal):
        load_model(path)


# -- controls: the payloads are real ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["lambda.keras", "lambda.h5"])
def test_the_lambda_payloads_run_when_keras_safe_mode_is_off(name: str, tmp_path: Path) -> None:
    import keras

    path, made = tmp_path / name, tmp_path / "ran"
    BY_NAME[name].build(path, made)
    keras.saving.load_model(path, safe_mode=False, compile=False)
    assert made.exists()


def test_the_pickle_payload_runs_when_unpickled(tmp_path: Path) -> None:
    path, made = tmp_path / "torch_wrapper.keras", tmp_path / "ran"
    BY_NAME[path.name].build(path, made)
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    payload = config["config"]["layers"][1]["config"]["module"]
    assert payload == pickle_payload(made)
    pickle.loads(base64.b64decode(payload))  # what torch.load(weights_only=False) would do with it
    assert made.exists()


@pytest.mark.parametrize("item", READERS, ids=lambda item: item.name)
def test_the_file_read_payloads_are_real(item: Hostile, tmp_path: Path) -> None:
    """An HDF5 reader opening the weights reads the local file: its values, and its access time moves."""
    path, secret = tmp_path / item.name, tmp_path / "secret"
    item.build(path, secret)
    if path.suffix == ".keras":  # as a weights file on disk (Keras' load_weights, an unpacked model)
        weights_file, kernel = tmp_path / "model.weights.h5", "layers/dense/vars/0"
        weights_file.write_bytes(zipfile.ZipFile(path).read("model.weights.h5"))
    else:
        weights_file, kernel = path, "model_weights/dense/hostile/dense/kernel"
    before = backdate(secret)
    with h5py.File(weights_file, "r") as f:
        weights = f[kernel][()]
    assert secret.stat().st_atime_ns != before  # checked before this test reads the file itself
    if item.name.startswith("external_dataset"):
        assert weights.tobytes() == secret.read_bytes()
    else:
        np.testing.assert_array_equal(weights, np.arange(30, dtype="float32").reshape(3, 10))


def test_the_bombs_are_real(folder: Path) -> None:
    """The zip bomb inflates as declared; the shape bomb declares petabytes and stores nothing."""
    with zipfile.ZipFile(folder / "zip_bomb_config.keras") as z:
        info = z.getinfo("config.json")
        with open(folder / "zip_bomb_config.keras", "rb") as f:
            f.seek(info.header_offset + 30 + len(info.filename))
            stream = f.read(info.compress_size)
    inflated = zlib.decompressobj(-15).decompress(stream[: len(stream) // 64], 64 << 20)
    assert len(inflated) >= 16 << 20 and set(inflated) == {ord(" ")}  # 1/64 of the stream: 16 MiB
    assert info.file_size == 1 << 30 and info.compress_size < 2 << 20
    with h5py.File(folder / "shape_bomb.h5", "r") as f:
        bomb = f["model_weights/dense/hostile/dense/kernel"]
        assert bomb.shape == (50_000_000, 50_000_000) and bomb.id.get_storage_size() == 0
