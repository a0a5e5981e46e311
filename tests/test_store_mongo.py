"""The MongoDB store beyond the shared contract: outages, passwords, TLS, failover, garbage, and what
someone with plain pymongo and Keras can read. Real mongod processes throughout (tests/mongod.py)."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote_plus

import gridfs
import numpy as np
import pytest
from bson import ObjectId
from mongod import Mongod, ReplicaSet, add_user, client, self_signed_certificate
from storetools import big_model, stored_items, tiny_model, tiny_model_file

from jupyter_cifar.errors import BadParameter, StoreUnavailable
from jupyter_cifar.store import open_store
from jupyter_cifar.store.mongo import MongoModelStore

PASSWORD = "p@ss:w/rd%?"  # every character a URI must escape
BOUND_S = 15  # a behaviour bound for "quickly" (the stores below use 1-3 s timeouts), not a benchmark


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("m") / "tiny.keras")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def auth_uri(server: Mongod, user: str = "alice", password: str = PASSWORD, db: str = "models") -> str:
    return f"mongodb://{user}:{quote_plus(password)}@127.0.0.1:{server.port}/{db}?authSource=admin"


def assert_secret_hidden(text: str, password: str = PASSWORD) -> None:
    assert password not in text and quote_plus(password) not in text


def unavailable_within(bound: float, operation: Callable[[], Any]) -> str:
    """Runs ``operation``, which must raise StoreUnavailable within ``bound`` seconds; its message."""
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        operation()
    assert time.monotonic() - start < bound, f"took {time.monotonic() - start:.1f} s"
    return str(info.value)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mongod]:
    """A server with access control on: alice may do anything, reader may only read db 'models'."""
    server = Mongod(tmp_path_factory.mktemp("auth"), args=("--auth",)).start()
    add_user(server.uri, "alice", PASSWORD)  # the first user: through the localhost exception
    with client(auth_uri(server, db="admin")) as admin:
        admin.admin.command("createUser", "reader", pwd="reader-pw", roles=[{"role": "read", "db": "models"}])
    yield server
    server.stop()


# -- the URI ---------------------------------------------------------------------------------------


def test_the_uri_is_shown_without_secrets_and_nothing_connects_before_first_use() -> None:
    start = time.monotonic()
    store = open_store(
        "mongodb://alice:p%40ss@db1.example:27017,db2.example/models"
        "?replicaSet=rs0&tlsCertificateKeyFilePassword=key-secret"
    )
    assert time.monotonic() - start < 1  # no server contacted (none could answer)
    assert isinstance(store, MongoModelStore)
    assert store.display == (
        "mongodb://alice:***@db1.example:27017,db2.example/models"
        "?replicaSet=rs0&tlsCertificateKeyFilePassword=***"
    )
    assert store.hosts == "db1.example:27017,db2.example"
    assert store.db.name == "models"
    assert "p%40ss" not in repr(store) and "key-secret" not in repr(store)
    assert MongoModelStore("mongodb://127.0.0.1:1").db.name == "jupyter_cifar"  # no database named


@pytest.mark.parametrize(
    "uri", ["mongodb://h:99999/db", "mongodb://u:p@ss@h/db", "mongodb://", "mongodb+srv://h:1/db"]
)
def test_a_uri_that_cannot_work_is_a_bad_parameter(uri: str) -> None:
    with pytest.raises(BadParameter, match="--store") as info:
        MongoModelStore(uri)
    assert "p@ss" not in str(info.value)


@pytest.mark.parametrize(
    ("uri", "password"),
    [
        ("mongodb://cifar:TopSec?ret99@127.0.0.1:1/jc", "TopSec?ret99"),  # the review's
        ("mongodb://cifar:Top/Sec?99@127.0.0.1:1/jc?authSource=admin", "Top/Sec?99"),
        ("mongodb://cifar:a#b?c@127.0.0.1:1/jc", "a#b?c"),
        ("mongodb://cifar:x@y?z@127.0.0.1:1/jc", "x@y?z"),
    ],
)
def test_a_password_written_unescaped_is_never_shown(uri: str, password: str) -> None:
    """Whatever stands between :// and the last @ of the authority is the user's: its password never
    appears, and the message says how to write it."""
    with pytest.raises(BadParameter) as info:
        MongoModelStore(uri).list()
    message = str(info.value)
    pieces = {piece for piece in re.split(r"[?/#@]", password) if len(piece) > 1}
    assert not any(piece in message for piece in pieces), message
    assert "mongodb://cifar:***@127.0.0.1:1/jc" in message and "escaped" in message


def test_an_srv_name_that_cannot_be_resolved_is_a_clear_quick_error() -> None:
    store = open_store("mongodb+srv://alice:srv-secret@cluster0.jupyter-cifar.invalid/models")
    message = unavailable_within(BOUND_S, store.list)
    assert "cluster0.jupyter-cifar.invalid" in message and "cannot be found" in message
    assert "srv-secret" not in message and "srv-secret" not in repr(store)


# -- outages and credentials -----------------------------------------------------------------------


def test_a_stopped_server_is_a_quick_clear_error_and_the_same_store_works_again(
    tmp_path: Path, model_file: Path
) -> None:
    server = Mongod(tmp_path / "mongod", args=("--auth",)).start()
    add_user(server.uri, "alice", PASSWORD)
    try:
        store = MongoModelStore(auth_uri(server), timeout=1)
        saved = store.save(model_file, "kept")
        server.stop()
        start = time.monotonic()
        fresh = MongoModelStore(auth_uri(server), timeout=1)  # made during the outage: not blocked
        assert time.monotonic() - start < 1
        operations: list[Callable[[], Any]] = [
            store.list,
            lambda: store.resolve("kept"),
            lambda: store.save(model_file, "kept"),
            lambda: store.export("kept", tmp_path / "out.keras"),
            lambda: store.set_tags("kept", {"a": "b"}),
            lambda: store.delete("kept"),
            lambda: store.collect_garbage(),
            fresh.list,
        ]
        for operation in operations:
            message = unavailable_within(BOUND_S, operation)
            assert f"MongoDB at 127.0.0.1:{server.port} is unreachable" in message
            assert_secret_hidden(message)
        assert_secret_hidden(repr(store))
        assert not (tmp_path / "out.keras").exists()

        server.start()
        assert store.resolve("kept").sha256 == saved.sha256  # the same objects, no new ones
        assert store.save(model_file, "kept").version == 2
        store.export("kept:1", tmp_path / "back.keras")
        assert sha256(tmp_path / "back.keras") == saved.sha256
        assert fresh.list(name="kept").total == 2  # its set-up, cut short by the outage, ran now
    finally:
        server.stop()


def test_the_right_password_works_and_a_wrong_one_says_so_without_showing_it(
    auth_server: Mongod, model_file: Path
) -> None:
    with MongoModelStore(auth_uri(auth_server)) as store:
        assert store.save(model_file, "guarded").version >= 1
    wrong = "not-" + PASSWORD
    store = MongoModelStore(auth_uri(auth_server, password=wrong), timeout=3)
    message = unavailable_within(BOUND_S, store.list)
    assert f"MongoDB at 127.0.0.1:{auth_server.port}: authentication failed for user 'alice'" in message
    for text in (message, repr(store), store.display):
        assert_secret_hidden(text, wrong)
    without = MongoModelStore(f"mongodb://127.0.0.1:{auth_server.port}/models", timeout=3)
    assert "not authorized" in unavailable_within(BOUND_S, without.list)


def test_a_read_only_user_can_list_and_load_but_not_save(auth_server: Mongod, model_file: Path) -> None:
    with MongoModelStore(auth_uri(auth_server)) as store:
        saved = store.save(model_file, "shared")
    with MongoModelStore(auth_uri(auth_server, "reader", "reader-pw"), timeout=3) as reader:
        assert reader.resolve(saved.ref).sha256 == saved.sha256  # set-up (indexes) skipped, not fatal
        reader.load(saved.ref)
        message = unavailable_within(BOUND_S, lambda: reader.save(model_file, "shared"))
        assert "not authorized" in message
    with MongoModelStore(auth_uri(auth_server)) as store:
        assert store.resolve("shared").version == saved.version
        store.collect_garbage(max_age=0)
        assert stored_items(store) == store.list(limit=1000).total  # nothing left behind


def test_tls_with_a_self_signed_certificate(tmp_path: Path, model_file: Path) -> None:
    pem, ca = self_signed_certificate(tmp_path / "tls")
    server = Mongod(
        tmp_path / "mongod", args=("--tlsMode", "requireTLS", "--tlsCertificateKeyFile", str(pem))
    ).start()
    try:
        with MongoModelStore(f"mongodb://127.0.0.1:{server.port}/models?tls=true&tlsCAFile={ca}") as store:
            record = store.save(model_file, "secure")
            store.export("secure", tmp_path / "back.keras")
            assert sha256(tmp_path / "back.keras") == record.sha256 == sha256(model_file)
        plain = MongoModelStore(f"mongodb://127.0.0.1:{server.port}/models", timeout=2)
        assert f"127.0.0.1:{server.port} is unreachable" in unavailable_within(BOUND_S, plain.list)
        untrusted = MongoModelStore(f"mongodb://127.0.0.1:{server.port}/models?tls=true", timeout=2)
        assert "certificate" in unavailable_within(BOUND_S, untrusted.list).lower()
    finally:
        server.stop()


# -- failover --------------------------------------------------------------------------------------


def test_every_acknowledged_save_survives_the_primary_stepping_down(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    source = tmp_path / "model.keras"
    big_model(1).save(source)  # ~1 MiB: a stepdown likely meets an upload in flight
    replica_set = ReplicaSet(tmp_path_factory.mktemp("rs")).start()
    try:
        uri = replica_set.uri.replace("/?", "/failover?")
        acknowledged: list[Any] = []
        failed: list[str] = []
        stop = threading.Event()

        def keep_saving() -> None:
            with MongoModelStore(uri) as store:
                while not stop.is_set():
                    try:
                        acknowledged.append(store.save(source, "ha"))
                    except StoreUnavailable as e:
                        failed.append(str(e))  # allowed: the caller was told; nothing half-visible

        def wait_for(count: int) -> None:
            deadline = time.monotonic() + 60
            while len(acknowledged) < count:
                assert time.monotonic() < deadline, f"saves stalled at {len(acknowledged)}: {failed}"
                time.sleep(0.05)

        savers = [threading.Thread(target=keep_saving) for _ in range(2)]
        for saver in savers:
            saver.start()
        try:
            wait_for(5)
            old_primary = replica_set.step_down()
            assert replica_set.wait_for_primary() != old_primary
            wait_for(len(acknowledged) + 10)  # saves go on against the new primary
        finally:
            stop.set()
            for saver in savers:
                saver.join()

        versions = [r.version for r in acknowledged]
        assert len(set(versions)) == len(versions), "a version was given twice"
        with MongoModelStore(uri) as store:
            stored = store.list(name="ha", limit=1000)
            assert len({r.version for r in stored.items}) == stored.total
            for record in acknowledged:  # every acknowledged save is there, whole
                assert store.resolve(record.ref).sha256 == record.sha256 == sha256(source)
                store.export(record.ref, tmp_path / "check.keras")
            store.collect_garbage(max_age=0)  # what a failed save left goes, and nothing else
            assert stored_items(store) == stored.total
    finally:
        replica_set.stop()


def test_an_insert_retried_after_it_landed_is_not_stored_twice(mongo_uri: str, model_file: Path) -> None:
    with MongoModelStore(mongo_uri) as store:
        store.save(model_file, "once")
        doc = store.versions.find_one({"name": "once"})
        assert doc is not None
        retry = {k: v for k, v in doc.items() if k not in ("_id", "version")}  # same file_id
        assert store._claim_version(retry)["version"] == 1
        assert store.versions.count_documents({"name": "once"}) == 1


def test_a_save_paused_before_its_insert_never_takes_a_number_given_and_deleted_meanwhile(
    mongo_uri: str, model_file: Path
) -> None:
    """The review's interleaving, made deterministic: B's save pauses just before its record is
    inserted; meanwhile A saves and deletes its version. B must not land under A's number."""
    with MongoModelStore(mongo_uri) as a, MongoModelStore(mongo_uri) as b:
        a.save(model_file, "cnn")
        paused, release = threading.Event(), threading.Event()
        insert = b.versions.insert_one

        def slow_insert(doc: dict, *args: object, **kwargs: object) -> object:
            paused.set()
            assert release.wait(30)
            return insert(doc, *args, **kwargs)

        b.versions = mock.Mock(wraps=b.versions, insert_one=slow_insert)  # B's insert pauses; nothing else
        with ThreadPoolExecutor(1) as pool:
            b_save = pool.submit(b.save, model_file, "cnn")
            assert paused.wait(30)
            a_record = a.save(model_file, "cnn", notes="A's model")
            a.delete(a_record.ref)
            release.set()
            b_record = b_save.result(timeout=30)
        assert b_record.version != a_record.version, f"cnn:{a_record.version} was given to A and to B"
        assert sorted(r.version for r in a.list(name="cnn").items) == [1, b_record.version]
        assert a.save(model_file, "cnn").version == max(a_record.version, b_record.version) + 1


def test_a_store_from_before_the_counter_goes_on_from_its_records(mongo_uri: str, model_file: Path) -> None:
    """Databases from before the counter hold versions and no ``issued``: numbering continues above
    both the records and the highest deleted number."""
    with MongoModelStore(mongo_uri) as store:
        for _ in range(3):
            store.save(model_file, "old")
        store.delete("old:3")
        store.counters.update_one({"_id": "old"}, {"$unset": {"issued": ""}})  # as an older version left it
        assert store.save(model_file, "old").version == 4
        store.counters.delete_one({"_id": "old"})
        assert store.save(model_file, "old").version == 5


# -- what others can read --------------------------------------------------------------------------


def test_what_the_store_wrote_is_plain_gridfs_and_a_plain_keras_file(mongo_uri: str, tmp_path: Path) -> None:
    import keras

    model = tiny_model()
    with open_store(mongo_uri) as store:
        record = store.save(model, "plain", tags={"team": "vision"})
    with client(mongo_uri) as plain_client:  # no project code from here on
        db = plain_client.get_default_database()
        doc = db["model_versions"].find_one({"name": "plain", "version": 1})
        assert doc is not None and doc["sha256"] == record.sha256 and doc["tags"] == {"team": "vision"}
        path = tmp_path / "plain.keras"
        with open(path, "wb") as f:
            gridfs.GridFSBucket(db, "model_files").download_to_stream(doc["file_id"], f)
    assert sha256(path) == record.sha256
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    plain = keras.saving.load_model(path)
    np.testing.assert_allclose(plain.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_tag_keys_with_dots_filter_and_update_like_any_other(mongo_uri: str, model_file: Path) -> None:
    with MongoModelStore(mongo_uri) as store:
        store.save(model_file, "dotted", tags={"data.version": "2", "plain": "x"})
        store.save(model_file, "dotted", tags={"data": "other"})
        assert [r.ref for r in store.list(tags={"data.version": "2"}).items] == ["dotted:1"]
        assert store.set_tags("dotted:1", {"data.version": None, "a.b": "$notafield"}).tags == {
            "plain": "x",
            "a.b": "$notafield",
        }
        assert [r.ref for r in store.list(tags={"a.b": "$notafield"}).items] == ["dotted:1"]


@pytest.mark.parametrize("metadata", [{"bad\x00key": 1}, {"seed": 2**70}])
def test_metadata_bson_cannot_hold_is_refused_and_nothing_is_stored(
    mongo_uri: str, model_file: Path, metadata: dict[str, Any]
) -> None:
    with MongoModelStore(mongo_uri) as store:
        with pytest.raises(BadParameter, match="metadata"):
            store.save(model_file, "odd", metadata=metadata)
        assert store.list().total == 0 and stored_items(store) == 0


# -- garbage ---------------------------------------------------------------------------------------


def _old_id(seconds_ago: float) -> ObjectId:
    """A unique ObjectId made ``seconds_ago`` (what a writer that long ago would have made)."""
    stamp = int(time.time() - seconds_ago).to_bytes(4, "big")
    return ObjectId(stamp + ObjectId().binary[4:])


def test_what_killed_saves_leave_is_collected_once_old_enough(
    mongo_uri: str, model_file: Path, tmp_path: Path
) -> None:
    from datetime import datetime, timedelta, timezone

    hour_ago = 3600
    with MongoModelStore(mongo_uri) as store:
        kept = store.save(model_file, "kept")
        chunks = store.db[f"{store.bucket_name}.chunks"]
        files = store.db[f"{store.bucket_name}.files"]
        # killed between upload and record: a whole GridFS file that no record names (now, and an hour ago)
        with open(model_file, "rb") as f:
            store.bucket.upload_from_stream("killed.keras", f)
        with open(model_file, "rb") as f:
            old_file = store.bucket.upload_from_stream("killed-long-ago.keras", f)
        files.update_one(
            {"_id": old_file}, {"$set": {"uploadDate": datetime.now(timezone.utc) - timedelta(hours=1)}}
        )
        # killed mid-upload: chunks whose files document was never written (now, and an hour ago)
        chunks.insert_many([{"files_id": ObjectId(), "n": n, "data": b"x" * 100} for n in range(1)])
        old_owner = _old_id(hour_ago)
        chunks.insert_many(
            [{"_id": _old_id(hour_ago), "files_id": old_owner, "n": n, "data": b"x" * 100} for n in range(3)]
        )
        # a delete cut short between the alias and the record
        store.aliases.insert_one({"name": "kept", "alias": "ghost", "version": 9})
        assert stored_items(store) == 5

    with MongoModelStore(mongo_uri) as reopened:
        assert reopened.list().total == 1  # the first use collected the old garbage, by itself
        assert stored_items(reopened) == 3  # the fresh leftovers may be saves still running: kept
        assert reopened.aliases.count_documents({}) == 0
        assert reopened.collect_garbage() == 0
        assert reopened.collect_garbage(max_age=0) == 2
        assert stored_items(reopened) == 1
        reopened.export("kept", tmp_path / "kept.keras")
        assert sha256(tmp_path / "kept.keras") == kept.sha256
