"""One contract, every backend: the same tests run against the embedded store and a real MongoDB."""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import signal
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from storetools import big_model, corrupt, save_forever, save_many, stored_items, tiny_model, tiny_model_file

from jupyter_cifar.errors import BadParameter, IntegrityError, ModelFileError, NotFound
from jupyter_cifar.store import ModelStore, Ref, open_store

BACKENDS = ["local", "mongo", "remote"]


@pytest.fixture(params=BACKENDS)
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The embedded store; a real MongoDB; a real Jupyter server's API (over an embedded store)."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue(f"{request.param}_uri")


@pytest.fixture
def store(store_uri: str):
    with open_store(store_uri) as s:
        yield s


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("m") / "tiny.keras")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)


# -- records and versions ------------------------------------------------------------------------


def test_saving_under_a_name_makes_the_next_version(store: ModelStore, model_file: Path) -> None:
    first = store.save(model_file, "cats", tags={"team": "vision"}, notes="first try")
    second = store.save(tiny_model(), "cats", metadata={"test_accuracy": 0.71, "preset": "fast"})
    other = store.save(model_file, "dogs")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert first.size == model_file.stat().st_size
    assert first.tags == {"team": "vision"} and first.notes == "first try"
    assert second.test_accuracy == 0.71 and second.metadata["preset"] == "fast"
    meta = second.metadata
    assert meta["architecture"] == "tiny" and meta["input_shape"] == [32, 32, 3]
    assert meta["keras_version"] and "@" in meta["saved_by"] and meta["parameters"] > 0
    assert first.metadata["imported_from"] == "tiny.keras"
    assert first.created < second.created


def test_records_outlive_the_store_object(store_uri: str, model_file: Path) -> None:
    with open_store(store_uri) as s:
        saved = s.save(model_file, "kept", aliases=["prod"], tags={"k": "v"})
    with open_store(store_uri) as again:
        assert again.resolve("kept").to_json() == saved.to_json()


def test_refs_resolve_and_missing_ones_say_what_is_missing(store: ModelStore, model_file: Path) -> None:
    for _ in range(3):
        store.save(model_file, "m")
    store.set_alias("m:2", "prod")
    assert store.resolve("m").version == 3
    assert store.resolve("m:1").version == 1
    assert store.resolve("m@prod").version == 2
    assert store.resolve(Ref("m", version=2)).aliases == ["prod"]
    with pytest.raises(NotFound, match="no model named 'nope'"):
        store.resolve("nope")
    with pytest.raises(NotFound, match=r"'m' has no version 7 \(latest: 3\)"):
        store.resolve("m:7")
    with pytest.raises(NotFound, match="'m' has no alias 'staging'"):
        store.resolve("m@staging")
    for bad in ("m:0", "m:x", "", "m@", "../m", "m/1"):
        with pytest.raises(BadParameter, match="REF"):
            store.resolve(bad)


def test_aliases_move_and_stay_unique_within_a_name(store: ModelStore, model_file: Path) -> None:
    for name in ("a", "a", "b"):
        store.save(model_file, name)
    store.set_alias("a:1", "prod")
    store.set_alias("b:1", "prod")  # the same alias in another model is another alias
    moved = store.set_alias("a:2", "prod")
    assert moved.aliases == ["prod"] and store.resolve("a:1").aliases == []
    assert store.resolve("b@prod").version == 1
    store.set_alias("a:2", "best")
    assert store.resolve("a:2").aliases == ["best", "prod"]
    store.remove_alias("a", "best")
    assert store.resolve("a:2").aliases == ["prod"]
    with pytest.raises(NotFound):
        store.remove_alias("a", "best")
    for reserved in ("latest", "3", "bad alias", "x/y"):
        with pytest.raises(BadParameter, match="alias"):
            store.set_alias("a:1", reserved)


def test_tags_merge_and_notes_replace(store: ModelStore, model_file: Path) -> None:
    store.save(model_file, "t", tags={"a": "1", "b": "2"})
    updated = store.set_tags("t", {"b": None, "c": "3"})
    assert updated.tags == {"a": "1", "c": "3"}
    assert store.set_notes("t:1", "Trained on **all** the data.").notes == "Trained on **all** the data."
    for bad in ({"bad key": "x"}, {"k": "x" * 1001}, {"k": "a\x00b"}):
        with pytest.raises(BadParameter, match="tag"):
            store.set_tags("t", bad)


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "x" * 101, "a\x00b", "a b", ".", "-x", "名前"])
def test_names_that_cannot_be_used_are_refused(store: ModelStore, model_file: Path, name: str) -> None:
    with pytest.raises(BadParameter, match="name"):
        store.save(model_file, name)
    assert store.list().total == 0


# -- listing ---------------------------------------------------------------------------------------


def test_list_filters_sorts_and_pages(store: ModelStore, model_file: Path) -> None:
    accuracies = [0.5, 0.9, None, 0.7]
    for i, acc in enumerate(accuracies):
        meta = {} if acc is None else {"test_accuracy": acc}
        store.save(model_file, "alpha" if i < 3 else "beta", metadata=meta, tags={"i": str(i % 2)})
    store.set_notes("alpha:2", "the good one")
    assert store.list().total == 4
    assert [r.ref for r in store.list().items] == ["beta:1", "alpha:3", "alpha:2", "alpha:1"]
    assert store.list(sort="created").items[0].ref == "alpha:1"
    by_acc = [r.test_accuracy for r in store.list(sort="-test_accuracy").items]
    assert by_acc == [0.9, 0.7, 0.5, None]  # no accuracy: last
    assert [r.ref for r in store.list(name="alpha", sort="-version").items] == [
        "alpha:3",
        "alpha:2",
        "alpha:1",
    ]
    assert [r.ref for r in store.list(search="GOOD").items] == ["alpha:2"]
    assert [r.ref for r in store.list(search="bet").items] == ["beta:1"]
    assert {r.ref for r in store.list(tags={"i": "1"}).items} == {"alpha:2", "beta:1"}
    page = store.list(sort="name", limit=2, offset=2)
    assert page.total == 4 and [r.ref for r in page.items] == ["alpha:3", "beta:1"]
    assert store.list(search="%").total == 0 and store.list(search="_").total == 0
    with pytest.raises(BadParameter, match="sort"):
        store.list(sort="password")
    with pytest.raises(BadParameter, match="limit"):
        store.list(limit=0)


# -- files -----------------------------------------------------------------------------------------


def test_export_is_a_standard_keras_file(store: ModelStore, images: np.ndarray, tmp_path: Path) -> None:
    import keras

    model = tiny_model()
    record = store.save(model, "exported")
    path = tmp_path / "out.keras"
    assert store.export("exported", path).ref == record.ref
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record.sha256
    plain = keras.saving.load_model(path)  # no project code involved
    np.testing.assert_allclose(plain.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    with pytest.raises(BadParameter, match="PATH"):
        store.export("exported", tmp_path / "out.h5")


def test_load_gives_the_same_predictions_and_caches_by_sha(
    store: ModelStore, images: np.ndarray, model_file: Path
) -> None:
    model = tiny_model()
    store.save(model, "loaded")
    loaded = store.load("loaded")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    assert store.load("loaded:1") is loaded


def test_legacy_h5_comes_in_as_keras(store: ModelStore, images: np.ndarray, tmp_path: Path) -> None:
    seed_model = tiny_model()
    h5 = tmp_path / "seed.h5"
    seed_model.save(h5)
    record = store.save(h5, "seed")
    assert record.metadata["imported_format"] == "h5"
    out = tmp_path / "seed.keras"
    store.export("seed", out)
    assert zipfile.is_zipfile(out)
    np.testing.assert_allclose(
        store.load("seed").predict(images, verbose=0), seed_model.predict(images, verbose=0), atol=1e-6
    )


def test_a_file_over_16_mb_round_trips_byte_for_byte(store: ModelStore, tmp_path: Path) -> None:
    source = tmp_path / "big.keras"
    big_model(18).save(source)
    assert source.stat().st_size > 16 * 1024 * 1024
    store.save(source, "big")
    out = tmp_path / "back.keras"
    store.export("big", out)
    assert out.read_bytes() == source.read_bytes()


def test_files_that_are_not_models_are_refused_and_nothing_is_stored(
    store: ModelStore, tmp_path: Path
) -> None:
    import keras

    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    marker = tmp_path / "ran"

    def touch(x):
        marker.write_text("ran")
        return x

    inputs = keras.Input((32, 32, 3))
    hostile = tmp_path / "hostile.keras"
    keras.Model(inputs, keras.layers.Lambda(touch)(inputs)).save(hostile)
    marker.unlink()
    for path in (text, hostile):
        with pytest.raises(ModelFileError, match=path.name):
            store.save(path, "refused")
    assert not marker.exists()
    assert store.list().total == 0 and stored_items(store) == 0


def test_a_corrupted_file_is_an_integrity_error_naming_the_version(
    store: ModelStore, model_file: Path, tmp_path: Path
) -> None:
    store.save(model_file, "fragile")
    record = store.save(model_file, "fragile")
    corrupt(store, record)
    with pytest.raises(IntegrityError, match="fragile:2"):
        store.load("fragile")
    with pytest.raises(IntegrityError, match="fragile:2"):
        store.export("fragile:2", tmp_path / "x.keras")
    assert not (tmp_path / "x.keras").exists()
    store.export("fragile:1", tmp_path / "ok.keras")  # the others are untouched


# -- deleting --------------------------------------------------------------------------------------


def test_delete_removes_the_bytes_and_the_aliases(store: ModelStore, model_file: Path) -> None:
    for _ in range(3):
        store.save(model_file, "gone")
    store.save(model_file, "stays")
    store.set_alias("gone:2", "prod")
    assert stored_items(store) == 4
    assert store.delete("gone@prod").version == 2
    assert stored_items(store) == 3
    with pytest.raises(NotFound, match="alias 'prod'"):
        store.resolve("gone@prod")
    assert [r.version for r in store.list(name="gone", sort="version").items] == [1, 3]
    assert store.save(model_file, "gone").version == 4
    store.delete("gone:4")  # the latest: its number is still never given to another model
    assert store.save(model_file, "gone").version == 5
    deleted = store.delete_model("gone")
    assert sorted(r.version for r in deleted) == [1, 3, 5]
    assert stored_items(store) == 1
    with pytest.raises(NotFound, match="no model named 'gone'"):
        store.resolve("gone")
    with pytest.raises(NotFound):
        store.delete_model("gone")
    assert store.resolve("stays").version == 1


# -- several processes -----------------------------------------------------------------------------


def test_8_processes_x_10_saves_get_versions_1_to_80(store_uri: str, model_file: Path) -> None:
    open_store(store_uri).close()  # create the store (and its indexes) once, as an app would
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(8) as pool:
        results = pool.starmap(save_many, [(store_uri, "busy", str(model_file), 10)] * 8)
    versions = sorted(v for r in results for v in r)
    assert versions == list(range(1, 81))  # none lost, none twice
    with open_store(store_uri) as s:
        assert s.list(name="busy", limit=100).total == 80
        assert stored_items(s) == 80


def test_a_save_killed_at_any_moment_leaves_whole_versions_or_none(
    store_uri: str, model_file: Path, tmp_path: Path
) -> None:
    rng = random.Random(1)
    ctx = multiprocessing.get_context("spawn")
    for _ in range(3):
        proc = ctx.Process(target=save_forever, args=(store_uri, "killed", str(model_file)))
        proc.start()
        time.sleep(6 + rng.random() * 3)  # importing Keras takes a few seconds; then saves run
        proc.kill()  # SIGKILL: no clean-up code runs
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
    with open_store(store_uri) as s:
        records, page = [], s.list(name="killed", limit=1000)
        while page.items:
            records += page.items
            page = s.list(name="killed", limit=1000, offset=len(records))
        assert records, "no save finished: the test did not exercise anything"
        for record in records:  # every visible version is whole
            s.export(record.ref, tmp_path / "check.keras")
        s.collect_garbage(max_age=0)  # what the killed saves half-wrote goes
        assert stored_items(s) == len(records)
