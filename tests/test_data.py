"""Loading CIFAR-10 from the real JPEG copy, from official-format pickles, and from the cache."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jupyter_cifar.engine.data import (
    CLASS_NAMES,
    Dataset,
    default_cache_dir,
    load_cifar10,
    resolve_data_source,
)
from jupyter_cifar.engine.data import folder as image_folder
from jupyter_cifar.errors import BadParameter, DataError

REPO = Path(__file__).resolve().parent.parent


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _official_rank(labels: np.ndarray, index: int) -> tuple[int, int]:
    """(class, rank of the image among its class in official order) of an official index."""
    c = int(labels[index])
    return c, int(np.count_nonzero(labels[:index] == c))


# --------------------------------------------------------------------------------------------
# The full JPEG copy


def test_full_copy_shapes_counts_and_layout(cifar10: Dataset, cifar10_dir: Path) -> None:
    ds = cifar10
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_test.shape == (10000, 32, 32, 3)
    assert ds.y_train.shape == (50000,) and ds.y_test.shape == (10000,)
    for array in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        assert array.dtype == np.uint8
    assert np.bincount(ds.y_train).tolist() == [5000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.class_names == CLASS_NAMES
    assert ds.layout == "image-folder"
    assert ds.source == os.path.abspath(cifar10_dir)
    assert ds.describe() == {
        "source": ds.source,
        "layout": "image-folder",
        "n_train": 50000,
        "n_test": 10000,
        "class_names": list(CLASS_NAMES),
    }


@pytest.mark.parametrize(("c", "k"), [(0, 0), (3, 417), (6, 999), (9, 500)])
def test_test_image_of_class_c_rank_k_is_that_file(
    cifar10: Dataset, cifar10_dir: Path, c: int, k: int
) -> None:
    # The folder is grouped by class in label order, and sorted by file name within a class.
    i = 1000 * c + k
    assert cifar10.y_test[i] == c
    path = cifar10_dir / "test" / CLASS_NAMES[c] / f"{k:04d}.jpg"
    np.testing.assert_array_equal(cifar10.x_test[i], _pixels(path))


def test_train_images_are_those_files(cifar10: Dataset, cifar10_dir: Path) -> None:
    for c, k in [(1, 0), (4, 2500), (8, 4999)]:
        path = cifar10_dir / "train" / CLASS_NAMES[c] / f"{k:04d}.jpg"
        np.testing.assert_array_equal(cifar10.x_train[5000 * c + k], _pixels(path))
        assert cifar10.y_train[5000 * c + k] == c


def test_second_load_is_served_from_the_cache(cifar10: Dataset, cifar10_dir: Path) -> None:
    load_cifar10(cifar10_dir)  # normally served already: the session fixture wrote the cache
    messages: list[str] = []
    again = load_cifar10(cifar10_dir, progress=messages.append)
    assert again.from_cache
    assert any(m.startswith("loaded from cache ") for m in messages), messages
    assert not any(m.startswith("decoding") for m in messages), messages
    assert again.layout == "image-folder" and again.class_names == CLASS_NAMES
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(again, name), getattr(cifar10, name)), name
    cache = Path(messages[-1].removeprefix("loaded from cache "))
    assert cache.parent == default_cache_dir() and cache.suffix == ".npz"


def test_scan_of_the_full_copy_counts_every_file(cifar10_dir: Path) -> None:
    # Every load of a cached folder lists and stats all 60,000 files (its speed: benchmarks/data_load.py).
    scan = image_folder._scan_image_folder(cifar10_dir)
    assert len(scan.files) == 60000 and scan.n_train == 50000


def test_jpeg_copy_labels_and_order_agree_with_lossless_originals(
    cifar10: Dataset, lossless_npz: Path
) -> None:
    with np.load(lossless_npz) as z:
        y_test, y_train = z["y_test"].reshape(-1), z["y_train"].reshape(-1)
        test_index, x_test_partial = z["test_index"], z["x_test_partial"]
        train_index, x_train_partial = z["train_index"], z["x_train_partial"]
    assert np.bincount(y_test).tolist() == [1000] * 10
    picks = np.linspace(0, len(test_index) - 1, 12).astype(int)
    for j in picks:
        c, k = _official_rank(y_test, int(test_index[j]))
        jpeg = cifar10.x_test[1000 * c + k]
        assert cifar10.y_test[1000 * c + k] == c
        assert _psnr(jpeg, x_test_partial[j]) > 20, (int(test_index[j]), c, k)
        # The check has power: the neighbouring image of the same class does not pass it.
        neighbour = cifar10.x_test[1000 * c + (k + 1) % 1000]
        assert _psnr(neighbour, x_test_partial[j]) < 20
    for j in np.linspace(0, len(train_index) - 1, 6).astype(int):
        c, k = _official_rank(y_train, int(train_index[j]))
        assert _psnr(cifar10.x_train[5000 * c + k], x_train_partial[j]) > 20


# --------------------------------------------------------------------------------------------
# Official python pickles, built from the lossless subset


def _write_batch(path: Path, x: np.ndarray, y: np.ndarray, label: str) -> None:
    batch = {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in y],
        # Official rows: 1024 red, then 1024 green, then 1024 blue bytes (channels first).
        b"data": np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), 3072),
        b"filenames": [f"image_{i}.png".encode() for i in range(len(x))],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


@pytest.fixture(scope="module")
def lossless(lossless_npz: Path) -> dict[str, np.ndarray]:
    with np.load(lossless_npz) as z:
        return {
            "x_train": z["x_train_partial"],
            "y_train": z["y_train"].reshape(-1)[z["train_index"]],
            "x_test": z["x_test_partial"],
            "y_test": z["y_test"].reshape(-1)[z["test_index"]],
        }


@pytest.fixture
def pickle_dir(tmp_path: Path, lossless: dict[str, np.ndarray], batches_meta: Path) -> Path:
    folder = tmp_path / "src" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    parts = np.array_split(np.arange(len(lossless["x_train"])), 5)
    for n, part in enumerate(parts, start=1):
        _write_batch(
            folder / f"data_batch_{n}",
            lossless["x_train"][part],
            lossless["y_train"][part],
            f"training batch {n} of 5",
        )
    _write_batch(folder / "test_batch", lossless["x_test"], lossless["y_test"], "testing batch")
    shutil.copyfile(batches_meta, folder / "batches.meta")
    return folder


def test_pickle_layout_round_trips_exactly(
    pickle_dir: Path, lossless: dict[str, np.ndarray], tmp_path: Path
) -> None:
    ds = load_cifar10(pickle_dir, cache_dir=tmp_path / "cache", workers=1)
    assert ds.layout == "pickle" and not ds.from_cache
    assert ds.source == str(pickle_dir)
    assert ds.class_names == CLASS_NAMES
    for name in ("x_train", "y_train", "x_test", "y_test"):
        got = getattr(ds, name)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, lossless[name])
    messages: list[str] = []
    again = load_cifar10(pickle_dir, cache_dir=tmp_path / "cache", progress=messages.append)
    assert again.from_cache and again.layout == "pickle"
    np.testing.assert_array_equal(again.x_train, lossless["x_train"])


def test_pickle_parent_folder_works(pickle_dir: Path, tmp_path: Path) -> None:
    ds = load_cifar10(pickle_dir.parent, cache_dir=tmp_path / "cache")
    assert ds.layout == "pickle" and ds.source == str(pickle_dir)
    assert len(ds.x_train) == 5551 and len(ds.x_test) == 1017


def test_pickle_class_names_come_from_batches_meta(pickle_dir: Path, tmp_path: Path) -> None:
    names = [f"kind {i}".encode() for i in range(10)]
    meta = {b"label_names": names, b"num_cases_per_batch": 10000, b"num_vis": 3072}
    (pickle_dir / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    ds = load_cifar10(pickle_dir, cache_dir=tmp_path / "cache")
    assert ds.class_names == tuple(f"kind {i}" for i in range(10))


class _RunsCommand:
    """Pickles as a call of os.system: what a malicious dataset file would contain."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def test_pickle_asking_for_a_forbidden_global_is_refused_and_nothing_runs(
    pickle_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps({b"data": _RunsCommand(f"touch {marker}"), b"labels": [0]}, protocol=2)
    (pickle_dir / "data_batch_2").write_bytes(payload)
    with pytest.raises(DataError) as info:
        load_cifar10(pickle_dir, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert str(pickle_dir / "data_batch_2") in message
    assert "refuses to load: the pickle asks for" in message
    assert "system" in message
    assert not marker.exists()
    # The payload is live: an ordinary unpickler does run the command.
    pickle.loads(payload)
    assert marker.exists()


def test_pickle_asking_for_builtins_is_refused(pickle_dir: Path, tmp_path: Path) -> None:
    # GLOBAL builtins.eval, then call it: a hand-written protocol-0 pickle.
    (pickle_dir / "test_batch").write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(DataError, match=r"asks for builtins\.eval"):
        load_cifar10(pickle_dir, cache_dir=tmp_path / "cache")


def test_garbled_batch_names_the_file(pickle_dir: Path, tmp_path: Path) -> None:
    batch = pickle_dir / "data_batch_4"
    batch.write_bytes(batch.read_bytes()[:5000])  # cut short, as by an interrupted copy
    with pytest.raises(DataError) as info:
        load_cifar10(pickle_dir, cache_dir=tmp_path / "cache")
    assert str(batch) in str(info.value)


def test_batch_of_the_wrong_shape_names_the_file(pickle_dir: Path, tmp_path: Path) -> None:
    batch = pickle_dir / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataError, match="not 3072") as info:
        load_cifar10(pickle_dir, cache_dir=tmp_path / "cache")
    assert str(batch) in str(info.value)


def test_missing_batch_names_the_file(pickle_dir: Path, tmp_path: Path) -> None:
    (pickle_dir / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing") as info:
        load_cifar10(pickle_dir, cache_dir=tmp_path / "cache")
    assert str(pickle_dir / "data_batch_3") in str(info.value)


# --------------------------------------------------------------------------------------------
# Small image folders: the cache, and errors


@pytest.fixture
def small(tmp_path: Path, cifar10_dir: Path) -> Path:
    """3 real images per class and split, copied from the JPEG copy."""
    root = tmp_path / "small"
    for split in ("train", "test"):
        for name in CLASS_NAMES:
            (root / split / name).mkdir(parents=True)
            for k in range(3):
                src = cifar10_dir / split / name / f"{k:04d}.jpg"
                shutil.copyfile(src, root / split / name / f"{k:04d}.jpg")
    return root


def _load(root: Path, cache: Path, **kwargs: object) -> tuple[Dataset, list[str]]:
    messages: list[str] = []
    ds = load_cifar10(root, cache_dir=cache, workers=1, progress=messages.append, **kwargs)
    return ds, messages


def _bump_mtime(path: Path) -> None:
    # File times can be coarser than a test is fast: move the time clearly forward.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_small_folder_loads_in_order(small: Path, tmp_path: Path, cifar10_dir: Path) -> None:
    ds, _ = _load(small, tmp_path / "cache")
    assert ds.x_train.shape == (30, 32, 32, 3) and ds.x_test.shape == (30, 32, 32, 3)
    assert ds.y_train.tolist() == [c for c in range(10) for _ in range(3)]
    np.testing.assert_array_equal(ds.x_test[3 + 1], _pixels(cifar10_dir / "test/automobile/0001.jpg"))


def test_cache_is_written_then_served(small: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, messages = _load(small, cache)
    assert not first.from_cache
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and f"cached to {files[0]}" in messages
    assert not list(cache.glob("*.tmp")) and not list(cache.glob(".*"))
    second, messages = _load(small, cache)
    assert second.from_cache and f"loaded from cache {files[0]}" in messages
    np.testing.assert_array_equal(second.x_train, first.x_train)
    np.testing.assert_array_equal(second.y_test, first.y_test)


def test_cache_is_never_served_stale(small: Path, tmp_path: Path, cifar10_dir: Path) -> None:
    cache = tmp_path / "cache"
    first, _ = _load(small, cache)

    # A changed picture (different content, size and time) at train/cat/0001.jpg (index 3*3+1).
    changed = small / "train" / "cat" / "0001.jpg"
    shutil.copyfile(cifar10_dir / "test" / "frog" / "0042.jpg", changed)
    _bump_mtime(changed)
    ds, _ = _load(small, cache)
    assert not ds.from_cache
    np.testing.assert_array_equal(ds.x_train[10], _pixels(changed))
    assert not np.array_equal(ds.x_train[10], first.x_train[10])
    assert _load(small, cache)[0].from_cache  # the rewritten cache is served again

    # Same bytes, new modification time: decoded again (the cache cannot know it is the same).
    _bump_mtime(small / "test" / "dog" / "0000.jpg")
    assert not _load(small, cache)[0].from_cache

    # An added file.
    shutil.copyfile(cifar10_dir / "train" / "ship" / "0100.jpg", small / "train" / "ship" / "x.jpg")
    ds, _ = _load(small, cache)
    assert not ds.from_cache and len(ds.x_train) == 31 and np.bincount(ds.y_train)[8] == 4

    # A removed file.
    (small / "test" / "truck" / "0002.jpg").unlink()
    ds, _ = _load(small, cache)
    assert not ds.from_cache and len(ds.x_test) == 29 and np.bincount(ds.y_test)[9] == 2
    assert _load(small, cache)[0].from_cache


@pytest.mark.parametrize("damage", ["junk", "truncated", "empty"])
def test_corrupt_cache_is_ignored_and_rewritten(small: Path, tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    first, _ = _load(small, cache)
    (path,) = cache.glob("*.npz")
    content = path.read_bytes()
    damaged = {"junk": b"junk" * 100, "truncated": content[: len(content) // 2], "empty": b""}
    path.write_bytes(damaged[damage])
    ds, messages = _load(small, cache)
    assert not ds.from_cache
    assert any(m.startswith("ignoring unreadable cache") for m in messages), messages
    np.testing.assert_array_equal(ds.x_train, first.x_train)
    assert path.read_bytes() == content  # rewritten, not left damaged
    assert _load(small, cache)[0].from_cache


def test_cache_file_is_itself_a_source(small: Path, tmp_path: Path) -> None:
    first, _ = _load(small, tmp_path / "cache")
    (path,) = (tmp_path / "cache").glob("*.npz")
    ds = load_cifar10(path)
    assert ds.layout == "cache" and ds.source == str(path)
    assert ds.class_names == CLASS_NAMES
    np.testing.assert_array_equal(ds.x_test, first.x_test)
    np.testing.assert_array_equal(ds.y_train, first.y_train)


def test_unwritable_cache_dir_still_loads(small: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    ds, messages = _load(small, blocker / "cache")
    assert len(ds.x_train) == 30
    assert any(m.startswith("could not write the cache") for m in messages), messages
    with pytest.warns(RuntimeWarning, match="could not write the cache"):
        load_cifar10(small, cache_dir=blocker / "cache", workers=1)


def test_parallel_decoding_equals_in_process(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_folder, "_CHUNK_SIZE", 7)  # several tasks even for 60 images
    one, _ = _load(small, tmp_path / "one")
    messages: list[str] = []
    two = load_cifar10(small, cache_dir=tmp_path / "two", workers=2, progress=messages.append)
    assert f"decoding 60 images from {small} with 2 processes" in messages
    np.testing.assert_array_equal(two.x_train, one.x_train)
    np.testing.assert_array_equal(two.x_test, one.x_test)


def test_other_formats_and_sizes_are_decoded_too(small: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    big = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(big).save(small / "train" / "cat" / "big.png")
    Image.fromarray(np.full((32, 32), 77, np.uint8), "L").save(small / "test" / "cat" / "grey.png")
    ds, _ = _load(small, tmp_path / "cache")
    assert ds.x_train.shape == (31, 32, 32, 3) and ds.x_test.shape == (31, 32, 32, 3)
    grey = ds.x_test[3 * 3 + 3]  # cat is class 3; its fourth file sorts last
    assert (grey == 77).all()


def test_folder_names_other_than_cifar10_are_sorted(small: Path, tmp_path: Path) -> None:
    for split in ("train", "test"):
        for name in CLASS_NAMES[2:]:
            shutil.rmtree(small / split / name)
        (small / split / "airplane").rename(small / split / "zeppelin")
    ds, _ = _load(small, tmp_path / "cache")
    assert ds.class_names == ("automobile", "zeppelin")
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1]


def test_env_variable_is_used_when_no_argument(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_CIFAR_DATA", str(small))
    ds = load_cifar10(cache_dir=tmp_path / "cache", workers=1)
    assert ds.source == str(small) and len(ds.x_train) == 30


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder or file") as info:
        load_cifar10(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_a_missing_relative_source_says_what_it_is_relative_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel runs in its notebook's folder: JUPYTER_CIFAR_DATA=../data from elsewhere misses."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JUPYTER_CIFAR_DATA", "../nowhere/cifar10")
    with pytest.raises(
        DataError, match=rf"^\.\./nowhere/cifar10: no such folder or file \(relative to {tmp_path}\)$"
    ):
        load_cifar10()


def test_folder_without_train(small: Path, tmp_path: Path) -> None:
    shutil.rmtree(small / "train")
    with pytest.raises(DataError, match="no train folder") as info:
        load_cifar10(small, cache_dir=tmp_path / "cache")
    assert str(small) in str(info.value)


def test_folder_that_is_no_dataset(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match="not a CIFAR-10 folder"):
        load_cifar10(tmp_path / "photos")


def test_file_that_is_no_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a dataset"):
        load_cifar10(tmp_path / "notes.txt")


def test_npz_without_the_arrays(lossless_npz: Path) -> None:
    with pytest.raises(DataError, match="no x_train") as info:
        load_cifar10(lossless_npz)
    assert str(lossless_npz) in str(info.value)


def test_empty_class_folder(small: Path, tmp_path: Path) -> None:
    folder = small / "train" / "deer"
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(DataError, match=f"^{re.escape(str(folder))}: class folder is empty$"):
        load_cifar10(small, cache_dir=tmp_path / "cache")


def test_class_missing_in_test(small: Path, tmp_path: Path) -> None:
    shutil.rmtree(small / "test" / "dog")
    with pytest.raises(DataError, match="class folder missing") as info:
        load_cifar10(small, cache_dir=tmp_path / "cache")
    assert str(small / "test" / "dog") in str(info.value)


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_images_are_named_with_the_problem(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setattr(image_folder, "_CHUNK_SIZE", 10)
    junk = small / "train" / "bird" / "0001.jpg"
    junk.write_bytes(b"this is not a picture")
    cut = small / "test" / "horse" / "0002.jpg"
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.raises(DataError) as info:
        load_cifar10(small, cache_dir=tmp_path / "cache", workers=workers)
    message = str(info.value)
    assert f"{junk}: not an image" in message
    assert f"{cut}: truncated or corrupt image" in message
    assert "Traceback" not in message and "\n" not in message
    assert not list((tmp_path / "cache").glob("*.npz"))  # nothing half-decoded was cached


def test_many_bad_images_are_counted(small: Path, tmp_path: Path) -> None:
    for name in CLASS_NAMES:
        (small / "test" / name / "0000.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"\(and 5 more bad images\)$"):
        load_cifar10(small, cache_dir=tmp_path / "cache", workers=1)


def test_bad_workers() -> None:
    with pytest.raises(BadParameter) as info:
        load_cifar10("/nowhere", workers=0)
    assert info.value.param == "workers"


# --------------------------------------------------------------------------------------------
# subset


def test_subset_is_stratified(cifar10: Dataset) -> None:
    sub = cifar10.subset(1000, 50)
    assert np.bincount(sub.y_train).tolist() == [100] * 10
    assert np.bincount(sub.y_test).tolist() == [5] * 10
    assert sub.x_train.shape == (1000, 32, 32, 3)
    assert sub.layout == cifar10.layout and sub.source == cifar10.source
    uneven = cifar10.subset(1005, None)
    assert sorted(np.bincount(uneven.y_train).tolist()) == [100] * 5 + [101] * 5
    assert uneven.x_test is cifar10.x_test  # None keeps everything


def test_subset_is_deterministic_per_seed(cifar10: Dataset) -> None:
    a, b = cifar10.subset(200, 30, seed=0), cifar10.subset(200, 30, seed=0)
    c = cifar10.subset(200, 30, seed=1)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_subset_keeps_images_with_their_labels() -> None:
    n = 600
    index = np.arange(n)
    x = np.zeros((n, 32, 32, 3), np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = index // 256, index % 256
    y = np.r_[np.zeros(500), np.ones(60), np.full(40, 2)].astype(np.uint8)
    ds = Dataset(x, y, x[:10], y[:10], ("a", "b", "c"), "synthetic", "cache")
    sub = ds.subset(150)
    picked = sub.x_train[:, 0, 0, 0].astype(int) * 256 + sub.x_train[:, 0, 0, 1]
    np.testing.assert_array_equal(sub.y_train, y[picked])
    assert np.bincount(sub.y_train).tolist() == [55, 55, 40]  # class 2 has only 40
    # A small class gives what it has; the others make up the rest.
    assert np.bincount(ds.subset(270).y_train).tolist() == [170, 60, 40]
    assert len(np.unique(picked)) == 150 and (np.diff(picked) > 0).all()


def test_subset_limits(cifar10: Dataset) -> None:
    assert cifar10.subset(None, None) is cifar10
    bigger = cifar10.subset(10**6, 10**6)
    assert len(bigger.x_train) == 50000 and len(bigger.x_test) == 10000
    for kwargs, param in [
        ({"train_limit": 0}, "train_limit"),
        ({"test_limit": -3}, "test_limit"),
        ({"train_limit": 2.5}, "train_limit"),
    ]:
        with pytest.raises(BadParameter) as info:
            cifar10.subset(**kwargs)  # type: ignore[arg-type]
        assert info.value.param == param


# --------------------------------------------------------------------------------------------
# Settings, and the official download


def test_resolve_data_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JUPYTER_CIFAR_DATA", raising=False)
    assert resolve_data_source(None) is None
    assert resolve_data_source(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("JUPYTER_CIFAR_DATA", str(tmp_path / "from-env"))
    assert resolve_data_source(None) == tmp_path / "from-env"
    assert resolve_data_source(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_source(tmp_path / "missing") == tmp_path / "missing"  # not checked


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JUPYTER_CIFAR_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("JUPYTER_CIFAR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "jupyter_cifar"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "jupyter_cifar"


def test_official_download_through_keras(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    # Stand-in for the official download: these machines cannot reach the CIFAR-10 site. It
    # returns what Keras' load_data returns: (n, 32, 32, 3) uint8 images and (n, 1) labels.
    rng = np.random.default_rng(0)

    def fake_load_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        x_train = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
        x_test = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
        y_train = (np.arange(20) % 10).reshape(20, 1).astype(np.uint8)
        y_test = (np.arange(10)[::-1]).reshape(10, 1).astype(np.uint8)
        return (x_train, y_train), (x_test, y_test)

    monkeypatch.delenv("JUPYTER_CIFAR_DATA", raising=False)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", fake_load_data)
    ds = load_cifar10()
    assert ds.layout == "keras" and ds.source == "keras: official CIFAR-10 download"
    assert ds.y_train.shape == (20,) and ds.y_train.dtype == np.uint8
    assert ds.y_test.tolist() == list(range(9, -1, -1))
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.class_names == CLASS_NAMES

    def offline() -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DataError, match=r"network unreachable.*JUPYTER_CIFAR_DATA"):
        load_cifar10()


def test_importing_data_does_not_import_tensorflow() -> None:
    code = (
        "import sys, jupyter_cifar.engine.data; "
        "bad = [m for m in ('keras', 'tensorflow') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
