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
from storetools import (
    add_orphan,
    add_partial,
    big_model,
    corrupt,
    dangle_alias,
    delete_latest_until,
    lose_file,
    save_forever,
    save_many,
    stored_items,
    tiny_model,
    tiny_model_file,
)

from jupyter_cifar.errors import BadParameter, IntegrityError, ModelFileError, NotFound
from jupyter_cifar.store import ModelStore, Ref, open_store
from jupyter_cifar.store.records import PROBLEM_KINDS

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


def test_text_utf8_cannot_hold_is_refused_and_nothing_changes(store: ModelStore, model_file: Path) -> None:
    """A lone surrogate (Python's stand-in for undecodable bytes, e.g. from a command line)."""
    store.save(model_file, "u", notes="kept")
    for call, param in (
        (lambda: store.set_notes("u", "bad \udcff"), "notes"),
        (lambda: store.set_tags("u", {"k": "bad \udcff"}), "tag"),
        (lambda: store.save(model_file, "u", notes="bad \udcff"), "notes"),
        (lambda: store.save(model_file, "u", metadata={"dataset": "bad \udcff"}), "metadata"),
    ):
        with pytest.raises(BadParameter, match=param):
            call()
    record = store.resolve("u")
    assert (record.version, record.notes, record.tags, store.list().total) == (1, "kept", {}, 1)
    assert len(check_name_error("x" * 10_000)) < 200  # a long bad name is not echoed whole


def check_name_error(name: str) -> str:
    from jupyter_cifar.store.records import check_name

    with pytest.raises(BadParameter) as caught:
        check_name(name)
    return str(caught.value)


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


def test_saves_racing_deletes_never_give_one_number_to_two_models(store_uri: str, model_file: Path) -> None:
    """4 processes save while 2 delete the latest version: every save gets a number of its own, never
    one that another save got (MongoDB once gave a deleted version's number to a save in flight)."""
    open_store(store_uri).close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(6) as pool:
        stop = manager.Event()
        deleters = [pool.apply_async(delete_latest_until, (store_uri, "race", stop)) for _ in range(2)]
        savers = [pool.apply_async(save_many, (store_uri, "race", str(model_file), 15)) for _ in range(4)]
        versions = [v for saver in savers for v in saver.get(timeout=600)]
        stop.set()
        deleted = sum(d.get(timeout=60) for d in deleters)
    assert len(versions) == 60 and len(set(versions)) == 60, sorted(versions)
    assert deleted > 0, "no delete ran while the saves did: the test raced nothing"
    with open_store(store_uri) as s:
        left = s.list(name="race", limit=100).items
        assert len(left) == 60 - deleted and {r.version for r in left} <= set(versions)
        assert s.save(model_file, "race").version == max(versions) + 1  # no number comes back


def test_a_client_killed_at_any_moment_leaves_whole_versions_or_none(
    remote_uri: str, model_file: Path, tmp_path: Path
) -> None:
    """Over HTTP: the embedded and MongoDB stores' writers are killed 100 times each in test_crash.py."""
    store_uri = remote_uri
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


# -- checking and repairing ------------------------------------------------------------------------


@pytest.fixture(params=["local", "mongo"])
def held_store(request: pytest.FixtureRequest, tmp_path: Path):
    """A store whose bytes this process holds (check() is not offered over HTTP)."""
    uri = str(tmp_path / "store") if request.param == "local" else request.getfixturevalue("mongo_uri")
    with open_store(uri) as s:
        yield s


def three_versions(store: ModelStore, model_file: Path) -> list:
    records = [store.save(model_file, "m") for _ in range(3)]
    store.set_alias("m:3", "prod")
    store.save(model_file, "other")
    return records


def assert_whole(store: ModelStore, refs: list[str], model_file: Path, tmp_path: Path) -> None:
    for ref in refs:
        store.export(ref, tmp_path / "whole.keras")
        assert (tmp_path / "whole.keras").read_bytes() == model_file.read_bytes()


def test_a_consistent_store_checks_clean_and_repair_changes_nothing(
    held_store: ModelStore, model_file: Path
) -> None:
    three_versions(held_store, model_file)
    before = [r.to_json() for r in held_store.list().items]
    for repair in (False, True):
        report = held_store.check(repair=repair, grace=0)
        assert report.ok and report.problems == [] and report.checked == 4 and report.in_progress == 0
    assert [r.to_json() for r in held_store.list().items] == before
    assert stored_items(held_store) == 4


DAMAGE = {
    # what is done by hand -> the problems check() must report, as (kind, name, version)
    "missing": (lambda s, f: lose_file(s, s.resolve("m:2")), {("missing", "m", 2)}),
    "corrupt": (lambda s, f: corrupt(s, s.resolve("m:2")), {("corrupt", "m", 2)}),
    "orphan": (lambda s, f: add_orphan(s, f), {("orphan", None, None)}),
    "partial": (lambda s, f: add_partial(s), {("partial", None, None)}),
    "dangling-alias": (
        lambda s, f: (s.delete("m:2"), dangle_alias(s, "m", "old", 2)),
        {("dangling-alias", "m", 2)},
    ),
    "counter": (  # an alias left by versions 4-7 deleted behind the store's back, counter untouched
        lambda s, f: dangle_alias(s, "m", "gone", 7),
        {("counter", "m", 7), ("dangling-alias", "m", 7)},
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_check_reports_each_kind_of_damage_and_repair_fixes_it(
    held_store: ModelStore, model_file: Path, tmp_path: Path, damage: str
) -> None:
    assert set(DAMAGE) <= set(PROBLEM_KINDS)
    three_versions(held_store, model_file)
    do, expected = DAMAGE[damage]
    do(held_store, model_file)
    listed = [r.ref for r in held_store.list(limit=100).items]
    items = stored_items(held_store)

    report = held_store.check(grace=0)
    assert {(p.kind, p.name, p.version) for p in report.problems} == expected
    assert not report.ok and not any(p.repaired for p in report.problems)
    assert all(p.detail for p in report.problems)
    if damage in ("missing", "corrupt"):
        assert "m:2" in report.problems[0].detail and "model is lost" in report.problems[0].detail
        assert [p.version for p in report.lost] == [2]
    assert [r.ref for r in held_store.list(limit=100).items] == listed  # without repair: read only
    assert stored_items(held_store) == items

    repaired = held_store.check(repair=True, grace=0)
    assert {(p.kind, p.name, p.version) for p in repaired.problems} == expected
    assert repaired.ok and all(p.repaired for p in repaired.problems)
    again = held_store.check(grace=0)
    assert again.ok and again.problems == []
    whole = [ref for ref in listed if not (damage in ("missing", "corrupt") and ref == "m:2")]
    assert sorted(r.ref for r in held_store.list(limit=100).items) == sorted(whole)  # no whole version went
    assert again.checked == len(whole) and stored_items(held_store) == len(whole)
    assert_whole(held_store, whole, model_file, tmp_path)
    assert held_store.resolve("m@prod").version == 3
    next_version = 8 if damage == "counter" else 4  # never a number that was used before
    assert held_store.save(model_file, "m").version == next_version


def test_damage_of_every_kind_at_once_is_repaired_in_one_run(
    held_store: ModelStore, model_file: Path, tmp_path: Path
) -> None:
    three_versions(held_store, model_file)
    held_store.save(model_file, "m")
    held_store.save(model_file, "m")
    lose_file(held_store, held_store.resolve("m:1"))
    corrupt(held_store, held_store.resolve("m:2"))
    held_store.delete("m:4")
    dangle_alias(held_store, "m", "old", 4)
    dangle_alias(held_store, "m", "gone", 9)
    add_orphan(held_store, model_file)
    add_partial(held_store)
    report = held_store.check(repair=True, grace=0)
    assert report.ok and sorted(p.kind for p in report.problems) == sorted(
        ["missing", "corrupt", "dangling-alias", "dangling-alias", "counter", "orphan", "partial"]
    )
    assert sorted(p.version for p in report.lost) == [1, 2]
    assert held_store.check(grace=0).problems == []
    assert sorted(r.ref for r in held_store.list().items) == ["m:3", "m:5", "other:1"]
    assert_whole(held_store, ["m:3", "m:5", "other:1"], model_file, tmp_path)
    assert held_store.save(model_file, "m").version == 10


def test_a_fresh_leftover_is_removed_only_when_no_save_can_own_it(
    held_store: ModelStore, model_file: Path
) -> None:
    """The embedded store knows when no save is running (a lock), whatever a leftover's age; MongoDB
    cannot tell a dead writer from a slow one, so a fresh leftover waits out the grace period."""
    held_store.save(model_file, "m")
    add_orphan(held_store, model_file)
    add_partial(held_store)
    report = held_store.check(repair=True)  # default grace: 15 minutes
    if held_store.display.startswith("mongodb://"):
        assert report.problems == [] and report.in_progress == 2 and stored_items(held_store) == 3
        assert held_store.check(repair=True, grace=0).ok
    else:
        assert {p.kind for p in report.problems} == {"orphan", "partial"} and report.in_progress == 0
    assert stored_items(held_store) == 1


def test_check_and_repair_never_touch_a_save_running_meanwhile(
    held_store: ModelStore, model_file: Path, tmp_path: Path
) -> None:
    """Saves run in another thread while check(repair=True) runs again and again: every save succeeds
    and stays whole. The embedded store's lock makes this hold with no grace period at all; MongoDB's
    protection is the grace period (the default here)."""
    import threading

    local = not held_store.display.startswith("mongodb://")
    writer = open_store(held_store.root if local else held_store.uri_parts.redacted)  # type: ignore[attr-defined]
    saved: list[int] = []
    failed: list[BaseException] = []

    def save_30() -> None:
        try:
            for _ in range(30):
                saved.append(writer.save_file(model_file, "busy").version)
        except BaseException as e:  # reported below
            failed.append(e)

    thread = threading.Thread(target=save_30)
    thread.start()
    checks = 0
    while thread.is_alive() or checks == 0:
        report = held_store.check(repair=True, grace=0 if local else 15 * 60)
        assert report.problems == []  # nothing a running save wrote is taken for a leftover
        checks += 1
    thread.join()
    writer.close()
    assert failed == [] and saved == list(range(1, 31)) and checks > 1
    assert_whole(held_store, [f"busy:{v}" for v in saved], model_file, tmp_path)
    assert held_store.check(grace=0).problems == []


def test_check_is_not_offered_over_http(remote_uri: str) -> None:
    with open_store(remote_uri) as store, pytest.raises(BadParameter, match="not over HTTP"):
        store.check()
